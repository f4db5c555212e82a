#!/usr/bin/env bash
# How fast one large table's data moves from one database into another on this machine, by
# the ways a restore from a live server (the sandbox of `dr restore --at … --to URL`, issue 20)
# could carry it: `bash ci/bench-load.sh [--scale N] [--rounds N]`.
#
#   pg_dump|pg_restore  pg_dump -Fc -Z0 --section=data -t pgbench_accounts | pg_restore
#                       (what dr's data streams and the by-hand copy of ci/bench-wal.sh do)
#   the same | cat      the same with a relay in the middle (what dr reading the stream to
#                       count its rows would add, without the counting)
#   the same | tee+wc   the relay counting newlines too (a second reader, a copy more)
#   COPY pipe           psql `\copy … to stdout` | psql `\copy … from stdin`: one COPY each
#                       side, no archive format between
#   COPY in 2 ranges    two such pipes at once, each a half of the table by ctid
#                       (`where ctid >= '(a,0)' and ctid < '(b,0)'`: PostgreSQL 14+'s TID
#                       range scan), so the destination loads it on two backends
#   count(*)            the exact count of the source table (what dr's proof scans)
#
# The destination database is made new (pre-data restored) before each way; the ways take
# turns, --rounds times. One PostgreSQL server holds both databases (source `src`, destination
# `x`), tuned as ci/bench-lib.sh tunes it. Times are wall seconds from `date`.
#
#   --scale N     pgbench scale of the source (default 300: pgbench_accounts ~3.8 GiB)
#   --rounds N    rounds of all the ways (default 2)
#   --keep        leave the work directory behind
#   DR_BENCH_DIR  work directory (default /tmp/dr-bench-load; emptied at the start)
#   DR_PG_BIN_DIR PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
scale=300
rounds=2
keep=0
while (($#)); do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

work=${DR_BENCH_DIR:-/tmp/dr-bench-load}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export PATH="$pg_bin:$PATH"
# shellcheck source=ci/bench-lib.sh
source ci/bench-lib.sh

bench_tools --no-dr
pgdata=$work/pgdata
bench_workdir

read -r port <<<"$(free_ports 1)"
start_postgres "$port" </dev/null
psql_in postgres <<<'CREATE DATABASE src'
log "pgbench -i -s $scale"
pgbench -i -q -s "$scale" "$(url src)" >"$work/pgbench.log" 2>&1
psql_in src <<<'VACUUM ANALYZE'
pages=$(psql_in src -c "SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'")
half=$((pages / 2))

fresh() {
    psql_in postgres -c 'DROP DATABASE IF EXISTS x' -c 'CREATE DATABASE x' >/dev/null
    pg_dump -Fc -Z0 --section=pre-data -d "$(url src)" | pg_restore -d "$(url x)"
}
dump() { pg_dump -Fc -Z0 --section=data -t pgbench_accounts -d "$(url src)"; }
way_dump() { dump | pg_restore -d "$(url x)"; }
way_relay() { dump | cat | pg_restore -d "$(url x)"; }
way_counted() { dump | tee >(wc -l >"$work/lines") | pg_restore -d "$(url x)"; }
range() {
    psql -X -q -d "$(url src)" -c "\\copy (SELECT * FROM pgbench_accounts WHERE ctid >= '($1,0)' AND ctid < '($2,0)') TO STDOUT" |
        psql -X -q -d "$(url x)" -c '\copy pgbench_accounts FROM STDIN'
}
way_copy() {
    psql -X -q -d "$(url src)" -c '\copy pgbench_accounts TO STDOUT' |
        psql -X -q -d "$(url x)" -c '\copy pgbench_accounts FROM STDIN'
}
way_split() {
    range 0 "$half" &
    local first=$!
    range "$half" $((pages + 1))
    wait "$first"
}
way_count() { psql_in src -c 'SELECT count(*) FROM pgbench_accounts' >/dev/null; }

declare -A label=(
    [dump]='`pg_dump -Fc -Z0 --section=data \| pg_restore`'
    [relay]='the same `\| cat \|`'
    [counted]='the same through `tee >(wc -l)`'
    [copy]='one COPY pipe (psql `\copy` both sides)'
    [split]='two COPY pipes at once, a ctid half each'
    [count]='`count(*)` of the source table'
)
order=(dump relay counted copy split count)
declare -A times
rows=$(psql_in src -c 'SELECT count(*) FROM pgbench_accounts')
for ((r = 1; r <= rounds; r++)); do
    for w in "${order[@]}"; do
        [[ $w == count ]] || fresh
        log "round $r: $w"
        s=$(date +%s.%N)
        "way_$w"
        t=$(awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
        times[$w]="${times[$w]:-}${times[$w]:+ }$t"
        if [[ $w != count ]]; then
            got=$(psql_in x -c 'SELECT count(*) FROM pgbench_accounts')
            [[ $got == "$rows" ]] || { log "FAILED: $w loaded $got rows of $rows"; exit 1; }
        fi
    done
done

machine_line
echo
echo "Command: \`bash ci/bench-load.sh --scale $scale --rounds $rounds\`. pgbench_accounts: $rows rows, $pages pages ($(awk -v p="$pages" 'BEGIN { printf "%.1f", p * 8 / 1024 }') MiB)."
echo
echo "| way | runs (s) |"
echo "| --- | ---: |"
for w in "${order[@]}"; do
    echo "| ${label[$w]} | ${times[$w]} |"
done
