#!/usr/bin/env bash
# dr against the tools it replaces, in one run on one machine: `bash ci/bench.sh [--scale N]`.
# Two parts, each with its own PostgreSQL and SeaweedFS, one after the other: the logical one
# below, then the WAL one (ci/bench-wal.sh: physical base backup, archiving under pgbench in
# archive and stream mode, point-in-time recovery; its header says what it measures).
# Part limits (issue 22): ci/bench-parts.sh, run on its own, measures peak RSS of a backup of a
# generated data stream of increasing size with `[repository.s3] max_parts = 1000`.
# Loading one table (issue 20): ci/bench-load.sh, run on its own, times the ways a restore from
# a live server could carry a large table's rows (pg_dump|pg_restore, COPY pipes, ctid ranges).
#
#   backup:  pg_dump -Fc -Z0 > /dev/null                  (the single-stream floor)
#            pg_dump -Fc -Z0 | gzip > file
#            pg_dump -Fd -j 2 -Z0 -f dir                  (the parallel floor, to local disk)
#            dr backup --jobs 1, --jobs 4, --jobs 2       (to SeaweedFS S3 on 127.0.0.1)
#   restore: pg_restore -j 2 from a local uncompressed archive into a fresh database
#            dr restore --jobs 2 --temp-dir TMPFS of the --jobs 2 backup, from SeaweedFS into a
#            fresh database, TMPFS a 64 MiB tmpfs mounted for the run (its peak use is polled)
#            the same dr restore through ci/bench-proxy.py, which resets the first GET of every
#            object half-way (dr resumes it with a Range request); goal (issue 22): <= 1.10x
#            dr verify --sandbox local --jobs 2 of that backup
#   copy:    dr copy of the --jobs 2 backup into a second bucket ([[copies]]), against a plain
#            SDK streaming copy of the same objects (ci/bench-copy.py: botocore GET piped into
#            a multipart upload, two objects at a time); goal (issue 22): <= 1.10x
#
# Builds the release binary, starts a tuned PostgreSQL 15 (shared_buffers=256MB) and a
# SeaweedFS server on free ports, builds the database (pgbench -i -s N plus a jsonb table of
# about N*3.4 MB; N=60 gives ~1.1 GB, N=300 ~5.5 GB), measures wall time and peak RSS
# (/usr/bin/time -v, "Maximum resident set size"), prints a markdown table and the goals, and
# removes everything it started. Goals (issue 10): backup --jobs 1 <= 1.05x pg_dump -Fc,
# backup --jobs 2 <= 1.05x pg_dump -Fd -j2, <= 0.75x pg_dump|gzip; dr peak RSS <= 64 MiB at
# --jobs 1, <= 128 MiB at --jobs 4; restore --jobs 2 <= 1.00x pg_restore -j2; temp dir during
# the restore <= 5% of the raw archive; verify <= 1.25x pg_restore -j2 + 5 s.
#
#   --scale N       pgbench scale (default 60; use 5 for a quick check of the script; the
#                   larger run of docs/BENCHMARKS.md is --scale 300, ~5.5 GB, and needs about
#                   4x the database in free disk under DR_BENCH_DIR)
#   --runs N        runs per measurement (default 3): the table shows the median wall time
#                   and the largest peak RSS
#   --keep          leave the work directory (archives, logs) behind
#   --no-wal        only the logical part
#   --wal-only      only the WAL part (ci/bench-wal.sh, given the other arguments)
#   --wal-secs N    seconds of pgbench per archiving mode in the WAL part (default 300)
#   --recovery-runs N  runs of each recovery in the WAL part (default 2)
#   --min-wal-mib M WAL the WAL part's recovery replays at least (default 2048)
#   DR_BENCH_DIR    work directory (default /tmp/dr-bench; emptied at the start); the WAL part
#                   uses DR_BENCH_DIR-wal after this one is removed (with --wal-only: DR_BENCH_DIR
#                   itself, default /tmp/dr-bench-wal)
#   DR_PG_BIN_DIR   PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   DR_BENCH_BIN    a dr binary to measure instead of building target/release/dr (e.g. a debug
#                   build, to check the script itself: its times mean nothing)
#
# A measurement that fails (e.g. a restore this build of dr cannot do) is reported as
# "failed" in the tables, the others still run, and the script exits 1 at the end.
#
# Peak RSS from /usr/bin/time is that of the process tree's largest member (Linux folds reaped
# children into ru_maxrss), so "dr" RSS is max(dr, its pg_dump/pg_restore); the pg_dump row
# shows how much of it pg_dump alone can account for. The temp-dir peak is sampled every 20 ms
# (statvfs of the tmpfs), so a shorter spike can be missed. Without root (no tmpfs mount) the
# restore's temp dir is a plain directory, sampled with du, and the report says so.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
scale=60
runs=3
keep=0
wal=1
wal_only=0
wal_args=()
while (($#)); do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --scale=*) scale=${1#*=}; shift ;;
        --runs) runs=$2; shift 2 ;;
        --runs=*) runs=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        --no-wal) wal=0; shift ;;
        --wal-only) wal_only=1; shift ;;
        --wal-secs | --recovery-runs | --min-wal-mib) wal_args+=("$1" "$2"); shift 2 ;;
        --wal-secs=* | --recovery-runs=* | --min-wal-mib=*) wal_args+=("$1"); shift ;;
        -h | --help) sed -n '2,51p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ $scale =~ ^[0-9]+$ && $scale -gt 0 ]] || { echo "bench: --scale needs a positive integer" >&2; exit 2; }
[[ $runs =~ ^[0-9]+$ && $runs -gt 0 ]] || { echo "bench: --runs needs a positive integer" >&2; exit 2; }
wal_args+=(--scale "$scale" --runs "$runs")
((!keep)) || wal_args+=(--keep)

work=${DR_BENCH_DIR:-/tmp/dr-bench}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export PATH="$pg_bin:$PATH"
# shellcheck source=ci/bench-lib.sh
source ci/bench-lib.sh

if ((wal_only)); then
    exec bash ci/bench-wal.sh "${wal_args[@]}"
fi

bench_tools
pgdata=$work/pgdata
tmpfs=$work/tmpfs
tmpfs_mounted=0
poll_pid=
stop_extra() {
    if [[ -n ${proxy_pid:-} ]]; then kill "$proxy_pid" 2>/dev/null || true; fi
    if [[ -n $poll_pid ]] && kill -0 "$poll_pid" 2>/dev/null; then
        kill "$poll_pid" 2>/dev/null || true
        wait "$poll_pid" 2>/dev/null || true
    fi
    if mountpoint -q "$tmpfs" 2>/dev/null; then
        umount "$tmpfs" 2>/dev/null || umount -l "$tmpfs" 2>/dev/null || log "could not unmount $tmpfs"
    fi
}
bench_workdir

# The restore's --temp-dir: a 64 MiB tmpfs, so a restore that stages more than that fails.
mkdir -p "$tmpfs"
if [[ $(id -u) == 0 ]] && mount -t tmpfs -o size=64m,mode=0700 dr-bench-tmpfs "$tmpfs"; then
    tmpfs_mounted=1
    temp_dir_kind="a 64 MiB tmpfs"
else
    log "could not mount a tmpfs (not root?): the restore's temp dir is a plain directory"
    temp_dir_kind="a plain directory (no tmpfs: not root)"
fi

# --- PostgreSQL 15 ----------------------------------------------------------------------------
read -r port <<<"$(free_ports 1)"
start_postgres "$port" <<<'full_page_writes = off'

# --- SeaweedFS --------------------------------------------------------------------------------
start_weed

# --- data ---------------------------------------------------------------------------------------
jsonb_rows=$((scale * 6500))
# Free disk: the database, a local archive (~0.65x) or -Fd directory, one restored copy at a
# time, the verify sandbox's copy, SeaweedFS: ~4x the database (~19 MiB per unit of scale).
need_mib=$((scale * 19 * 4 + 1024))
avail_mib=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
if ((avail_mib < need_mib)); then
    log "need about $need_mib MiB free under $work for --scale $scale, have $avail_mib MiB (set DR_BENCH_DIR)"
    exit 3
fi
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
# Backups are signed (and restores and verifies check the signature): the bench host's key.
"$dr" keygen --signing --output "$work/signing.key" >/dev/null 2>&1
cat >"$work/dr.toml" <<EOF
[repository]
url = "s3://bench/dr"
endpoint = "http://127.0.0.1:$s3"
region = "us-east-1"
path_style = true

[encryption]
recipients = ["$recipient"]
identity_file = "$work/identity.txt"

[signing]
key_file = "$work/signing.key"

[backup]
pg_bin_dir = "$pg_bin"

[restore]
temp_dir = "$work"

[[targets]]
name = "bench"
url = "$(url bench)"
EOF
export DR_CONFIG=$work/dr.toml

# The sizes of one backup: "stored raw data_streams", where raw sums the archive's objects
# (format 1: the dump; format 2: pre-data, every data stream and post-data).
backup_sizes() {
    "$dr" show "$1" --target bench --json | python3 -c '
import json, sys
m = json.load(sys.stdin)
archive = [o for o in m["objects"] if o["role"] in ("dump", "pre_data", "data", "post_data")]
streams = sum(o["role"] == "data" for o in m["objects"]) or 1
print(sum(o["bytes"] for o in m["objects"]), sum(o["raw_bytes"] for o in archive), streams)'
}
latest_id() { "$dr" show latest --target bench --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

# The peak use of the restore's temp dir, sampled every 20 ms while a restore runs: statvfs of
# the tmpfs (what is allocated in it, deleted-but-open files too), or du of a plain directory.
start_temp_poll() {
    rm -f "$work/temp.peak"
    python3 - "$tmpfs" "$work/temp.peak" "$tmpfs_mounted" <<'PY' &
import os, signal, sys, time
path, out, mounted = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def used():
    if mounted:
        st = os.statvfs(path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total
peak = -1
while True:
    u = used()
    if u > peak:
        peak = u
        with open(out + ".tmp", "w") as f:
            f.write(str(peak))
        os.replace(out + ".tmp", out)
    time.sleep(0.02)
PY
    poll_pid=$!
    for _ in $(seq 1 200); do [[ -s $work/temp.peak ]] && break; sleep 0.01; done
}
temp_peak=0
stop_temp_poll() {
    kill "$poll_pid" 2>/dev/null || true
    wait "$poll_pid" 2>/dev/null || true
    poll_pid=
    local p
    p=$(cat "$work/temp.peak" 2>/dev/null || echo 0)
    if ((p > temp_peak)); then temp_peak=$p; fi
}

bench_url=$(url bench)
fresh_db() { PGOPTIONS='-c client_min_messages=warning' psql_in postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
drop_db() { PGOPTIONS='-c client_min_messages=warning' psql_in postgres -c "DROP DATABASE IF EXISTS $1"; }

# Backup: the floors first, then dr with 1, 4 and 2 streams (2 last: the one restored below).
measure pg_dump bash -c "pg_dump -Fc -Z0 -d '$bench_url' > /dev/null"
measure pg_dump_gzip bash -c "pg_dump -Fc -Z0 -d '$bench_url' | gzip > '$work/bench.dump.gz'"
gzip_bytes=$(stat -c %s "$work/bench.dump.gz")
rm -f "$work/bench.dump.gz"
before_pg_dump_dir() { rm -rf "$work/bench.dir"; }
measure pg_dump_dir pg_dump -Fd -j 2 -Z0 -d "$bench_url" -f "$work/bench.dir"
dir_bytes=$(du -sb "$work/bench.dir" 2>/dev/null | cut -f1 || echo n/a)
rm -rf "$work/bench.dir"

# Backup ids are whole seconds: never reuse the last one.
before_dr_backup_1() { sleep 1; }
before_dr_backup_4() { sleep 1; }
before_dr_backup_2() { sleep 1; }
for n in 1 4 2; do
    measure "dr_backup_$n" "$dr" --quiet backup --target bench --jobs "$n"
    if [[ ${secs[dr_backup_$n]} != failed ]]; then
        read -r "stored_$n" "raw_$n" "streams_$n" <<<"$(backup_sizes latest)"
        declare "id_$n=$(latest_id)"
    else
        declare "stored_$n=n/a" "raw_$n=n/a" "streams_$n=n/a" "id_$n="
    fi
done

# Restore: the floor from a local uncompressed archive, then dr from S3 with the 64 MiB
# tmpfs as its temp dir, then verify, both of the --jobs 2 backup.
log "writing a local uncompressed archive for pg_restore (not timed)"
pg_dump -Fc -Z0 -d "$bench_url" -f "$work/bench.dump"
local_dump_bytes=$(stat -c %s "$work/bench.dump")
before_pg_restore() { fresh_db restore_pg; }
after_pg_restore() { drop_db restore_pg; }
measure pg_restore pg_restore -j 2 -d "$(url restore_pg)" "$work/bench.dump"
rm -f "$work/bench.dump"

restore_id=${id_2:-${id_1:-latest}}
before_dr_restore() {
    fresh_db restore_dr
    find "$tmpfs" -mindepth 1 -delete
    start_temp_poll
}
after_dr_restore() {
    stop_temp_poll
    local left
    left=$(find "$tmpfs" -mindepth 1 | wc -l)
    ((left == 0)) || log "dr restore left $left files in its temp dir $tmpfs"
    drop_db restore_dr
}
measure dr_restore "$dr" --quiet restore "$restore_id" --target bench --yes --jobs 2 \
    --temp-dir "$tmpfs" --to "$(url restore_dr)"
# verify: sandbox start + fetch + restore + counts + sandbox removal, end to end. The local
# sandbox's cluster lives in TMPDIR: keep it under the work dir (checked for free space).
measure dr_verify env TMPDIR="$work" "$dr" --quiet verify "$restore_id" --target bench --sandbox local --jobs 2

# The same restore through ci/bench-proxy.py, which resets the first GET of every object half-way
# through its body: dr resumes each with a Range request (issue 22). The proxy's own cost is in
# this row too (a Python relay).
read -r proxy_port <<<"$(free_ports 1)"
sed "s|http://127.0.0.1:$s3|http://127.0.0.1:$proxy_port|" "$work/dr.toml" >"$work/dr-proxy.toml"
proxy_pid=
before_dr_restore_proxy() {
    fresh_db restore_dr
    python3 ci/bench-proxy.py "$proxy_port" "$s3" "$work/proxy.$run_no.stats" &
    proxy_pid=$!
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break; sleep 0.05; done
}
after_dr_restore_proxy() {
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=
    drop_db restore_dr
}
measure dr_restore_proxy "$dr" --config "$work/dr-proxy.toml" --quiet restore "$restore_id" --target bench --yes \
    --jobs 2 --temp-dir "$tmpfs" --to "$(url restore_dr)"
read -r proxy_requests proxy_resets <"$work/proxy.1.stats" 2>/dev/null || { proxy_requests=n/a; proxy_resets=n/a; }

# Copy: the --jobs 2 backup (its objects, signature and manifest) into a second bucket of the
# same SeaweedFS, each run under a prefix of its own; the floor copies the same keys.
curl -fsS -X PUT "http://127.0.0.1:$s3/copy" >/dev/null || log "could not create the copy bucket"
cat >>"$work/dr.toml" <<EOF

[[copies]]
name = "bench-copy"
url = "s3://copy/unused"
[copies.s3]
endpoint = "http://127.0.0.1:$s3"
path_style = true
EOF
copy_keys=()
if [[ -n ${id_2:-} ]]; then
    mapfile -t copy_keys < <("$dr" show "$id_2" --target bench --json | python3 -c '
import json, sys
m = json.load(sys.stdin)
for o in m["objects"]:
    print("dr/" + o["key"])
print("dr/bench/%s/manifest.json.sig" % m["id"])
print("dr/bench/%s/manifest.json" % m["id"])')
fi
measure sdk_copy bash -c 'python3 ci/bench-copy.py "http://127.0.0.1:'"$s3"'" bench copy "plain-$RANDOM$RANDOM" "$@" >/dev/null' _ "${copy_keys[@]}"
before_dr_copy() { export DR_COPY_BENCH_COPY_URL="s3://copy/dr-$run_no"; }
measure dr_copy "$dr" --quiet copy "$id_2" --target bench
unset DR_COPY_BENCH_COPY_URL

# --- report ----------------------------------------------------------------------------------
b1_dump=$(ratio "${secs[dr_backup_1]}" "${secs[pg_dump]}")
b1_gzip=$(ratio "${secs[dr_backup_1]}" "${secs[pg_dump_gzip]}")
b2_dir=$(ratio "${secs[dr_backup_2]}" "${secs[pg_dump_dir]}")
size_ratio=$(ratio "$stored_1" "$gzip_bytes")
r_ratio=$(ratio "${secs[dr_restore]}" "${secs[pg_restore]}")
p_ratio=$(ratio "${secs[dr_restore_proxy]}" "${secs[dr_restore]}")
c_ratio=$(ratio "${secs[dr_copy]}" "${secs[sdk_copy]}")
v_budget=$(is_num "${secs[pg_restore]}" && awk -v p="${secs[pg_restore]}" 'BEGIN { printf "%.2f", 1.25 * p + 5 }' || echo n/a)
v_ratio=$(ratio "${secs[dr_verify]}" "$v_budget")
rss_1=$(rss_mib dr_backup_1)
rss_4=$(rss_mib dr_backup_4)
if [[ ${secs[dr_restore]} != failed ]] && is_num "$raw_2"; then
    temp_pct=$(awk -v p="$temp_peak" -v r="$raw_2" 'BEGIN { if (r > 0) printf "%.2f", 100 * p / r; else print "n/a" }')
    temp_measured="${temp_pct}% ($(bytes_mib "$temp_peak") MiB of $(bytes_mib "$raw_2") MiB)"
else
    temp_pct=n/a
    temp_measured="n/a (no restore)"
fi
cat <<EOF

## dr benchmark, scale $scale ($(date -u +%Y-%m-%dT%H:%MZ))

Command: \`bash ci/bench.sh --scale $scale --runs $runs\` $(commit_note). Wall time: median of $runs runs; peak RSS: the largest of them.

$(machine_line)
Database: $(bytes_mib "$db_bytes") MiB on disk (pgbench scale $scale + documents jsonb $(bytes_mib "$docs_bytes") MiB); pg_dump -Fc -Z0 archive $(bytes_mib "$local_dump_bytes") MiB; raw archive of the restored \`--jobs 2\` backup $(bytes_mib "$raw_2") MiB (data streams: $streams_2). Restore temp dir: $temp_dir_kind.

| run | wall (s) | peak RSS (MiB) | output (MiB) |
| --- | ---: | ---: | ---: |
| \`pg_dump -Fc -Z0 > /dev/null\` | ${secs[pg_dump]} | $(rss_mib pg_dump) | $(bytes_mib "$local_dump_bytes") |
| \`pg_dump -Fc -Z0 \| gzip > file\` | ${secs[pg_dump_gzip]} | $(rss_mib pg_dump_gzip) | $(bytes_mib "$gzip_bytes") |
| \`pg_dump -Fd -j 2 -Z0\` (local dir) | ${secs[pg_dump_dir]} | $(rss_mib pg_dump_dir) | $(bytes_mib "$dir_bytes") |
| \`dr backup --jobs 1\` (zstd + age, to S3) | ${secs[dr_backup_1]} | $rss_1 | $(bytes_mib "$stored_1") |
| \`dr backup --jobs 2\` (to S3) | ${secs[dr_backup_2]} | $(rss_mib dr_backup_2) | $(bytes_mib "$stored_2") |
| \`dr backup --jobs 4\` (to S3) | ${secs[dr_backup_4]} | $rss_4 | $(bytes_mib "$stored_4") |
| \`pg_restore -j 2\` (local archive) | ${secs[pg_restore]} | $(rss_mib pg_restore) | |
| \`dr restore --jobs 2 --temp-dir\` (from S3) | ${secs[dr_restore]} | $(rss_mib dr_restore) | |
| \`dr restore --jobs 2\` through the resetting proxy ($proxy_resets of $proxy_requests requests reset half-way, run 1) | ${secs[dr_restore_proxy]} | $(rss_mib dr_restore_proxy) | |
| \`dr verify --sandbox local --jobs 2\` (from S3) | ${secs[dr_verify]} | $(rss_mib dr_verify) | |
| SDK streaming copy of the \`--jobs 2\` backup (ci/bench-copy.py) | ${secs[sdk_copy]} | $(rss_mib sdk_copy) | $(bytes_mib "$stored_2") |
| \`dr copy\` of the same backup (to a second bucket) | ${secs[dr_copy]} | $(rss_mib dr_copy) | $(bytes_mib "$stored_2") |

| goal | measured | target | |
| --- | ---: | ---: | --- |
| backup \`--jobs 1\` time / \`pg_dump -Fc -Z0 > /dev/null\` | $(x "$b1_dump") | <= 1.05x | $(verdict "$b1_dump" 1.05) |
| backup \`--jobs 2\` time / \`pg_dump -Fd -j 2 -Z0\` | $(x "$b2_dir") | <= 1.05x | $(verdict "$b2_dir" 1.05) |
| backup \`--jobs 1\` time / \`pg_dump \| gzip\` | $(x "$b1_gzip") | <= 0.75x | $(verdict "$b1_gzip" 0.75) |
| backup size / gzip | $(x "$size_ratio") | (smaller is better) | |
| dr backup \`--jobs 1\` peak RSS | $(with_unit "$rss_1" MiB) | <= 64 MiB | $(verdict "$rss_1" 64) |
| dr backup \`--jobs 4\` peak RSS | $(with_unit "$rss_4" MiB) | <= 128 MiB | $(verdict "$rss_4" 128) |
| restore \`--jobs 2\` time / \`pg_restore -j 2\` | $(x "$r_ratio") | <= 1.00x | $(verdict "$r_ratio" 1.00) |
| restore temp dir peak / raw archive | $temp_measured | <= 5% | $(verdict "$temp_pct" 5) |
| restore through the resetting proxy / without it | $(x "$p_ratio") | <= 1.10x | $(verdict "$p_ratio" 1.10) |
| dr restore peak RSS | $(with_unit "$(rss_mib dr_restore)" MiB) | | |
| \`dr copy\` time / SDK streaming copy | $(x "$c_ratio") | <= 1.10x | $(verdict "$c_ratio" 1.10) |
| verify time / (1.25 x pg_restore -j 2 + 5 s) | $(x "$v_ratio") ($(with_unit "${secs[dr_verify]}" s) vs $(with_unit "$v_budget" s)) | <= 1.00x | $(verdict "$v_ratio" 1.00) |

All runs (s): pg_dump ${all_secs[pg_dump]}; pg_dump|gzip ${all_secs[pg_dump_gzip]}; pg_dump -Fd -j 2 ${all_secs[pg_dump_dir]}; dr backup --jobs 1 ${all_secs[dr_backup_1]}; --jobs 2 ${all_secs[dr_backup_2]}; --jobs 4 ${all_secs[dr_backup_4]}; pg_restore ${all_secs[pg_restore]}; dr restore ${all_secs[dr_restore]}; through the proxy ${all_secs[dr_restore_proxy]}; dr verify ${all_secs[dr_verify]}; SDK copy ${all_secs[sdk_copy]}; dr copy ${all_secs[dr_copy]}.
EOF

status=0
if ((${#failed[@]})); then
    log "failed measurements: ${failed[*]}"
    status=1
fi
if ((wal)); then
    # This part's servers and data go first: the WAL part needs the disk and the CPUs.
    stop_all
    ((keep)) || rm -rf "$work"
    DR_BENCH_BIN=$dr DR_BENCH_DIR=$work-wal bash ci/bench-wal.sh "${wal_args[@]}" || status=1
fi
exit "$status"
