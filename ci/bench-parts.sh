#!/usr/bin/env bash
# Part limits per provider (issue 22, item 3): dr's peak RSS while a backup uploads one
# generated data stream of increasing size to SeaweedFS with `[repository.s3] max_parts =
# 1000`, in parts of 6 MiB, cut into objects of at most 853 parts (under 5 GiB, CopyObject's
# limit). `bash ci/bench-parts.sh [--sizes "2 8"] [--part-mib N]` (sizes in GiB).
#
# The stream is generated, not dumped: a `pg_dump` wrapper in a private bin dir
# (`backup.pg_bin_dir`) runs the real pg_dump for everything except `--section=data`, for
# which it writes N GiB of AES-CTR keystream (incompressible: zstd keeps it whole, so the
# stored stream is N GiB too). Everything else is a real `dr backup --jobs 1` of a real
# (small) database: snapshot, counting, pre-data, post-data, globals, details, the manifest.
# The backup cannot be restored (its data section is noise) and is not meant to be.
#
# Peak RSS is /usr/bin/time -v's "Maximum resident set size" of the process tree's largest
# member (dr; the wrapper's openssl and head are small). Flat RSS across sizes is the point:
# the plan (crates/dr-store/src/parts.rs, `stream_plan`) does not depend on the size, and the
# unit test `a_terabyte_stream_is_planned_as_a_gigabyte_one_with_1000_parts` shows 1 TB gets
# the same parts and buffers as 1 GB.
#
#   --sizes "A B"   stream sizes in GiB (default "2 8"; "0.1" for a quick check of the
#                   script); SeaweedFS needs that much disk
#   --discard       delete each object of the stream once it is stored (and have SeaweedFS
#                   reclaim it), so disk stays at about two objects whatever the size: the
#                   way to run the 1 TB simulation: `--sizes "931.3225746154785"` is 10^12
#                   bytes, ~2 h 30 min at the ~106 MiB/s of docs/BENCHMARKS.md. dr reads
#                   nothing back before its commit, so the backup still completes.
#   --part-mib N    `backup.part_size_mib = N` instead of dr's default (6): e.g. 8, the
#                   default before, to measure both in one run
#   --keep          leave the work directory behind
#   DR_BENCH_DIR    work directory (default /tmp/dr-bench-parts; emptied at the start)
#   DR_PG_BIN_DIR   PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   DR_BENCH_BIN    the dr binary to measure (default: cargo build --release)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
sizes="2 8"
runs=1
keep=0
discard=0
part_mib=
while (($#)); do
    case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --sizes=*) sizes=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        --discard) discard=1; shift ;;
        --part-mib) part_mib=$2; shift 2 ;;
        --part-mib=*) part_mib=${1#*=}; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

work=${DR_BENCH_DIR:-/tmp/dr-bench-parts}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export PATH="$pg_bin:$PATH"
# shellcheck source=ci/bench-lib.sh
source ci/bench-lib.sh

bench_tools
pgdata=$work/pgdata
bench_workdir

read -r port <<<"$(free_ports 1)"
start_postgres "$port" </dev/null
# Volumes of 64 MiB for the largest size (the backups are deleted between sizes), with room.
largest=$(printf '%s\n' $sizes | sort -g | tail -n 1)
# Discarded, the space comes back but not every volume: about 3 stay in use per GiB streamed
# (6 allowed: a run of hours should not end on a volume ceiling; an empty volume costs two
# file descriptors and no disk).
if ((discard)); then
    weed_volume_max=$(awk -v g="$largest" 'BEGIN { printf "%d", g * 6 + 200 }')
else
    weed_volume_max=$(awk -v g="$largest" 'BEGIN { printf "%d", g * 16 * 1.25 + 100 }')
fi
start_weed
psql_in postgres <<<'CREATE DATABASE bench'
psql_in bench <<<'CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;'

# --- the generated stream ------------------------------------------------------------------
fake=$work/bin
mkdir -p "$fake"
ln -s "$pg_bin/pg_dumpall" "$fake/pg_dumpall"
cat >"$fake/pg_dump" <<SH
#!/usr/bin/env bash
for a in "\$@"; do
    if [[ \$a == --section=data ]]; then
        openssl enc -aes-128-ctr -nosalt -pass pass:dr-bench -in /dev/zero 2>/dev/null |
            head -c "\$(awk -v g="\$DR_BENCH_GIB" 'BEGIN { printf "%.0f", g * 1073741824 }')"
        exit 0
    fi
done
exec "$pg_bin/pg_dump" "\$@"
SH
chmod 755 "$fake/pg_dump"

age-keygen -o "$work/identity.txt" 2>/dev/null
"$dr" keygen --signing --output "$work/signing.key" >/dev/null 2>&1
recipient=$(awk '/public key:/ {print $NF}' "$work/identity.txt")
cat >"$work/dr.toml" <<TOML
[repository]
url = "s3://bench/parts"
[repository.s3]
endpoint = "http://127.0.0.1:$s3"
path_style = true
max_parts = 1000
[backup]
jobs = 1
pg_bin_dir = "$fake"
${part_mib:+part_size_mib = $part_mib}
[encryption]
recipients = ["$recipient"]
[signing]
key_file = "$work/signing.key"
[[targets]]
name = "gen"
url = "$(url bench)"
TOML

# --discard: every stored object of the data stream deleted as it appears (counted), then the
# volumes vacuumed so SeaweedFS frees the space.
discarded=$work/discarded
discard_objects() {
    local k
    curl -fsS "http://127.0.0.1:$s3/bench?list-type=2&prefix=parts/gen/&max-keys=1000" |
        grep -oE '<Key>[^<]*data-1\.zst\.age[^<]*</Key>' | sed -E 's/<\/?Key>//g' |
        while read -r k; do
            curl -fsS -X DELETE "http://127.0.0.1:$s3/bench/$k" >/dev/null && echo "$k" >>"$discarded"
        done
    curl -fsS "http://127.0.0.1:$weed_master/vol/vacuum?garbageThreshold=0.01" >/dev/null 2>&1 || true
}
discarding() { while :; do sleep 5; discard_objects || true; done; }

declare -A objects
for gib in $sizes; do
    export DR_BENCH_GIB=$gib
    : >"$discarded"
    discarder=
    if ((discard)); then discarding & discarder=$!; fi
    measure "gen_${gib}" "$dr" --config "$work/dr.toml" backup
    if [[ -n $discarder ]]; then kill "$discarder" 2>/dev/null; wait "$discarder" 2>/dev/null || true; fi
    objects[$gib]=$(curl -fsS "http://127.0.0.1:$s3/bench?list-type=2&prefix=parts/gen/&max-keys=1000" |
        grep -oE '<Key>[^<]*data-1\.zst\.age[^<]*</Key>' | wc -l)
    objects[$gib]=$((objects[$gib] + $(sort -u "$discarded" | wc -l)))
    # Room for the next size: the backups are noise.
    curl -fsS "http://127.0.0.1:$s3/bench?list-type=2&prefix=parts/&max-keys=1000" |
        grep -oE '<Key>[^<]*</Key>' | sed -E 's/<\/?Key>//g' |
            while read -r k; do curl -fsS -X DELETE "http://127.0.0.1:$s3/bench/$k" >/dev/null; done
done

machine_line
echo
echo "Command: \`bash ci/bench-parts.sh --sizes \"$sizes\"$( ((discard)) && echo ' --discard' || true)${part_mib:+ --part-mib $part_mib}\` $(commit_note). \`[repository.s3] max_parts = 1000\`, parts of ${part_mib:-6} MiB, \`--jobs 1\`."
echo
echo "| generated data stream | objects of data-1 | wall (s) | throughput (MiB/s) | peak RSS (MiB) |"
echo "| --- | --- | --- | --- | --- |"
for gib in $sizes; do
    s=${secs[gen_$gib]}
    tp=n/a
    if is_num "$s"; then tp=$(awk -v g="$gib" -v s="$s" 'BEGIN { printf "%.0f", g * 1024 / s }'); fi
    echo "| $gib GiB | ${objects[$gib]} | $s | $tp | $(rss_mib "gen_$gib") |"
done
((${#failed[@]} == 0)) || { log "failed: ${failed[*]}"; exit 1; }
