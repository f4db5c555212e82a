#!/usr/bin/env bash
# dr's WAL side against the stock tools, in one run on one machine (issue 19):
# `bash ci/bench-wal.sh [--scale N] [--wal-secs S]`, or `bash ci/bench.sh --wal-only`.
#
#   base backup: pg_basebackup -Ft -D - -X none -c fast > /dev/null     (the floor)
#                dr backup --physical (to SeaweedFS S3 on 127.0.0.1); its log says when the
#                base was streamed and when the WAL it needs was in the repository: the wait
#   archiving:   pgbench -c 8 -j 2 -T S (saturated) with archive_command = dr wal push, then
#                again with dr wal stream (archive_mode off); the lag sampled every 3 s
#   recovery:    the newest base + all WAL archived after it (>= --min-wal-mib), replayed to
#                an LSN in the last segment (both pause there): floor = the same base tar
#                (decrypted beforehand) untarred from local disk, restore_command = 'cp DIR/%f
#                %p' on the same segments (fetched beforehand with dr wal fetch: that loop
#                measures fetch); dr = dr restore --at LSN --to-dir DIR --start from S3 (an
#                archive-mode copy is never promoted by --start: `latest` is refused there)
#   into a db:   dr restore --at LSN --to URL --jobs 2 (sandbox recovery from S3, then section
#                streams into a new database) against by hand: the floor's recovery paused at
#                the LSN, then pg_dump -Fc -Z0 | pg_restore into a new database; goal (issue
#                20) <= 1.10x, and both databases must hold the same pgbench counts
#   memory:      peak RSS of every dr wal push (archive_command wrapped in /usr/bin/time),
#                dr wal fetch (the exact restore_command dr wrote, run once per segment), the
#                prefetch workers it starts (detached: their VmHWM polled every 50 ms) and
#                dr wal stream (/usr/bin/time -v; includes its pg_receivewal child)
#
# Goals (issue 19): base backup <= 1.05x pg_basebackup; archive lag <= 2 segments in both
# modes; recovery <= 1.15x the floor; dr wal push/fetch/stream peak RSS <= 64 MiB.
#
# Lag is counted in completed segments not yet stored: archive mode, the current WAL file
# (pg_walfile_name(pg_current_wal_lsn())) minus pg_stat_archiver.last_archived_wal minus 1;
# stream mode, the current WAL file minus the newest segment record in the repository (listed
# through the SeaweedFS filer) minus 1. 0 = everything but the segment being written is stored.
#
#   --scale N          pgbench scale of the cluster (default 60, ~0.9 GB; 5 for a quick check)
#   --runs N           runs of each base backup (default 3; median time, largest RSS)
#   --recovery-runs N  runs of each recovery (dr and the floor taking turns) and of each
#                      restore into a database (default 2)
#   --wal-secs S       seconds of pgbench per archiving mode (default 300; 30 for a check)
#   --min-wal-mib M    WAL the recovery replays at least (default 2048): pgbench goes on in
#                      archive mode until the archive holds that much after the base
#   --keep             leave the work directory behind
#   DR_BENCH_DIR       work directory (default /tmp/dr-bench-wal; emptied at the start)
#   DR_PG_BIN_DIR      PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   DR_BENCH_BIN       a dr binary to measure instead of building target/release/dr
#
# PostgreSQL as in ci/bench.sh (fsync=off, synchronous_commit=off: the disk is out of it,
# WAL comes as fast as the CPUs make it) but with full_page_writes on, as dr check requires,
# and checkpoint_timeout 5min (both PostgreSQL's defaults).
# A measurement that fails is "failed" in the tables and the script exits 1 at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
scale=60
runs=3
recovery_runs=2
wal_secs=300
min_wal_mib=2048
keep=0
while (($#)); do
    case $1 in
        --scale | --runs | --recovery-runs | --wal-secs | --min-wal-mib)
            declare "$(tr - _ <<<"${1#--}")=$2"; shift 2 ;;
        --scale=* | --runs=* | --recovery-runs=* | --wal-secs=* | --min-wal-mib=*)
            v=${1#--}; declare "$(tr - _ <<<"${v%%=*}")=${1#*=}"; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,47p' "$0"; exit 0 ;;
        *) echo "bench-wal: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
for n in scale runs recovery_runs wal_secs min_wal_mib; do
    [[ ${!n} =~ ^[0-9]+$ && ${!n} -gt 0 ]] || { echo "bench-wal: --${n//_/-} needs a positive integer" >&2; exit 2; }
done

work=${DR_BENCH_DIR:-/tmp/dr-bench-wal}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export PATH="$pg_bin:$PATH"
# shellcheck source=ci/bench-lib.sh
source ci/bench-lib.sh
bench_tools
pgdata=$work/pgdata
home=$work/drhome # config, keys, env file, time logs, spool: the postgres user's
sampler_pid=
procmax_pid=
stream_pid=
stream_dr_pid=
stop_extra() {
    for p in $sampler_pid $procmax_pid $stream_dr_pid $stream_pid; do
        if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
    done
    for d in "$work"/rec-*; do
        [[ -f $d/postmaster.pid ]] || continue
        "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$d" -m immediate -w -t 30 >/dev/null 2>&1 || true
    done
}
bench_workdir
swap_before=$(awk '/^pswpin|^pswpout/ {s += $2} END {print s}' /proc/vmstat)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS

# --- SeaweedFS, dr's files, PostgreSQL archiving through dr wal push --------------------------
start_weed
filer_wal="http://127.0.0.1:$filer/buckets/bench/dr"
read -r port <<<"$(free_ports 1)"
pg_port=$port
mkdir -p "$home/spool"
recipient=$("$dr" keygen --output "$home/identity.txt" 2>/dev/null)
"$dr" keygen --signing --output "$home/signing.key" >/dev/null 2>&1
cat >"$home/dr.env" <<EOF
AWS_ACCESS_KEY_ID=bench
AWS_SECRET_ACCESS_KEY=bench
AWS_REGION=us-east-1
EOF
cat >"$home/dr.toml" <<EOF
[repository]
url = "s3://bench/dr"
endpoint = "http://127.0.0.1:$s3"
region = "us-east-1"
path_style = true

[encryption]
recipients = ["$recipient"]
identity_file = "$home/identity.txt"

[signing]
key_file = "$home/signing.key"

[backup]
pg_bin_dir = "$pg_bin"

# One cluster, two WAL targets: archive mode first, then stream mode.
[[targets]]
name = "wala"
url = "$(url postgres)"
[targets.wal]
mode = "archive"

[[targets]]
name = "wals"
url = "$(url postgres)"
[targets.wal]
mode = "stream"
spool_dir = "$home/spool"
EOF
chmod 600 "$home/dr.env"
chmod 700 "$home"
[[ $(id -u) != 0 ]] || chown -R postgres:postgres "$home"
drc() { "$dr" --config "$home/dr.toml" --env-file "$home/dr.env" "$@"; }
time_fmt='%%e %%M %%x %%U %%S' # wall s, peak RSS KiB, exit status, user and system CPU s (%% is PostgreSQL's %)
start_postgres "$pg_port" <<EOF
wal_level = replica
archive_mode = on
archive_command = '/usr/bin/time -f "$time_fmt" -a -o $home/push.times $dr --config $home/dr.toml --env-file $home/dr.env wal push --target wala %p'
max_slot_wal_keep_size = 20GB
checkpoint_timeout = 5min
log_line_prefix = '%m [%p] '
EOF
[[ $(psql_in postgres -c 'SHOW wal_segment_size') == 16MB ]] || { log "this script counts 16 MiB segments"; exit 3; }

log "pgbench -i -s $scale"
pgbench -i -q -s "$scale" "$(url postgres)" >"$work/pgbench-init.log" 2>&1
db_bytes=$(psql_in postgres -c "SELECT sum(pg_database_size(oid)) FROM pg_database")

# Segment numbers (16 MiB segments): of a 24-hex WAL file name, of an LSN X/Y, and back.
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); }
lsn_bytes() { local h=${1%/*} l=${1#*/}; echo $((16#$h * 4294967296 + 16#$l)); }
seg_name() { printf '%08X%08X%08X' "$1" $(($2 / 256)) $(($2 % 256)); }
push_lines() { [[ -f $home/push.times ]] && wc -l <"$home/push.times" || echo 0; }

# CPU while a measurement runs: the sampler in cpu mode, twice a second, into cpu.TAG.samples.
cpu_start() {
    cpu_samples=$work/cpu.$1.samples
    : >"$cpu_samples"
    python3 ci/bench_wal.py sample cpu - "$cpu_samples" - - 0.5 \
        "$pgdata,$work/rec-dr,$work/rec-floor" "$$,$weed_pid" "$dr" &
    sampler_pid=$!
}
# cpu_stop: sets cpu_last to "busy/other" (means, % of all cores).
cpu_stop() {
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
    cpu_last=$(awk 'NR > 1 { n++; b += $8; o += $9 } END { if (n) printf "%.0f/%.0f", b / n, o / n; else print "n/a" }' "$cpu_samples")
}
# with_cpu NAME measure NAME CMD...: cpu_of[NAME] = the CPU while all its runs ran.
declare -A cpu_of
with_cpu() {
    cpu_start "$1"
    "${@:2}"
    cpu_stop
    cpu_of[$1]=$cpu_last
}

# --- base backup -------------------------------------------------------------------------------
# Before each run (untimed) a checkpoint, so that the base backup's own one finds as little to
# do for either.
before_pg_basebackup() { psql_in postgres -c CHECKPOINT; }
before_dr_base() { sleep 1; psql_in postgres -c CHECKPOINT; } # backup ids are whole seconds
after_dr_base() { cp "$work/dr-base.log" "$work/dr-base.$run_no.log"; }
with_cpu pg_basebackup measure pg_basebackup bash -c "pg_basebackup -d '$(url postgres)' -Ft -D - -X none -c fast > /dev/null 2>> '$work/pg_basebackup.log'"
# The same compression and encryption with the stock tools, for scale (not a goal).
before_stock_base() { psql_in postgres -c CHECKPOINT; }
with_cpu stock_base measure stock_base bash -o pipefail -c "pg_basebackup -d '$(url postgres)' -Ft -D - -X none -c fast 2>> '$work/pg_basebackup.log' | zstd -3 -q | age -r '$recipient' > /dev/null"
# The fastest stock level: what any compression costs beside pg_basebackup on these cores.
before_stock_base_z1() { psql_in postgres -c CHECKPOINT; }
with_cpu stock_base_z1 measure stock_base_z1 bash -o pipefail -c "pg_basebackup -d '$(url postgres)' -Ft -D - -X none -c fast 2>> '$work/pg_basebackup.log' | zstd -1 -q | age -r '$recipient' > /dev/null"
# zstd level 1 (the design's fallback when level 3 cannot keep up on 2 cores), before the
# default level: the newest base, the one the recovery uses, is of the default config.
sed 's/^\[backup\]$/[backup]\nzstd_level = 1/' "$home/dr.toml" >"$home/dr-z1.toml"
[[ $(id -u) != 0 ]] || chown postgres:postgres "$home/dr-z1.toml"
before_dr_base_z1() { sleep 1; psql_in postgres -c CHECKPOINT; }
with_cpu dr_base_z1 measure dr_base_z1 bash -c "'$dr' --config '$home/dr-z1.toml' --env-file '$home/dr.env' backup --physical --target wala > /dev/null 2>> '$work/dr-base-z1.log'"
with_cpu dr_base measure dr_base bash -c "'$dr' --config '$home/dr.toml' --env-file '$home/dr.env' --log-format json backup --physical --target wala > /dev/null 2> '$work/dr-base.log'"
# From the JSON log: seconds from start to "base backup streamed" and from there to "complete".
read -r base_stream_s base_wait_s <<<"$(python3 ci/bench_wal.py base-phases "$work"/dr-base.[0-9]*.log)"
read -r base_id base_start base_tar_key base_stored base_raw <<<"$(drc show latest --target wala --json 2>/dev/null | python3 ci/bench_wal.py base-manifest)"

# --- archiving under pgbench -c 8 ----------------------------------------------------------------
# load MODE: pgbench -c 8 for --wal-secs with the sampler running, then the drain: until the
# lag is 0 (at most 120 s). Sets t0, t1 (pgbench start/end, epoch) and drain_s.
load() {
    local mode=$1 samples=$work/samples.$1
    : >"$samples"
    python3 ci/bench_wal.py sample "$mode" "$(url postgres)" "$samples" "$filer_wal" "$home/spool" 3 \
        "$pgdata" "$$,$weed_pid" "$dr" &
    sampler_pid=$!
    sleep 1
    t0=$(date +%s.%N)
    log "$mode mode: pgbench -c 8 -j 2 -T $wal_secs"
    pgbench -c 8 -j 2 -T "$wal_secs" -n "$(url postgres)" >"$work/pgbench.$mode.log" 2>&1 ||
        { tail -n 20 "$work/pgbench.$mode.log" >&2; failed+=("pgbench in $mode mode"); }
    t1=$(date +%s.%N)
    drain_s=">120"
    for _ in $(seq 1 120); do
        if awk -v t="$t1" '$1 > t && $4 == 0 {found = 1} END {exit !found}' "$samples"; then
            drain_s=$(awk -v t="$t1" '$1 > t && $4 == 0 {printf "%.0f", $1 - t; exit}' "$samples")
            break
        fi
        sleep 1
    done
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
}
# lag_stats MODE: of the samples taken while pgbench ran: "samples max_lag median_lag
# stored_segments_per_s wal_mib_per_s mean_load1 max_spool_files tps mean_busy% mean_other%".
lag_stats() { python3 ci/bench_wal.py lag-stats "$work/samples.$1" "$t0" "$t1" "$work/pgbench.$1.log"; }
# time_stats FILE FROM: the "%e %M %x %U %S" lines of /usr/bin/time after line FROM: "count
# median_s p90_s max_s max_rss_mib failures median_cpu_s total_cpu_s".
time_stats() { tail -n +"$(($2 + 1))" "$1" | python3 ci/bench_wal.py time-stats; }

archive_from=$(push_lines)
load archive
read -r a_n a_max a_med a_rate a_mibs a_load a_spool a_tps a_busy a_other <<<"$(lag_stats archive)"
a_drain=$drain_s
read -r p_n p_med p_p90 p_max p_rss p_bad p_cpu _ <<<"$(time_stats "$home/push.times" "$archive_from")"

# The recovery replays at least --min-wal-mib after the base: more pgbench if the run made less.
base_start_bytes=$(lsn_bytes "${base_start/none/0/0}")
wal_after_base() { echo $((($(lsn_bytes "$(psql_in postgres -c 'SELECT pg_current_wal_lsn()')") - base_start_bytes) / 1048576)); }
topup_s=0
# A checkpoint every 5 s meanwhile: the first change of each page after one is written whole
# (full_page_writes), which makes WAL several times faster than pgbench alone.
while (($(wal_after_base) < min_wal_mib + 32)); do
    log "WAL after the base: $(wal_after_base) MiB, not above $min_wal_mib MiB: 30 s more pgbench with checkpoints (archive mode)"
    pgbench -c 8 -j 2 -T 30 -n "$(url postgres)" >>"$work/pgbench.topup.log" 2>&1 &
    topup_pid=$!
    for _ in 1 2 3 4 5 6; do sleep 5; psql_in postgres -c CHECKPOINT; done
    wait "$topup_pid"
    topup_s=$((topup_s + 30))
done
# The recovery target: the first record at or after this LSN (a row inserted after it), in the
# last segment archived.
target_lsn=$(psql_in postgres -c "SELECT pg_current_wal_lsn()")
psql_in postgres -c "CREATE TABLE IF NOT EXISTS bench_end (t timestamptz); INSERT INTO bench_end VALUES (now())" >/dev/null
last=$(psql_in postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 300); do
    [[ $(psql_in postgres -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < "$last" ]] || break
    sleep 1
done
read -r all_n _ _ _ all_rss all_bad _ _ <<<"$(time_stats "$home/push.times" 0)"

# --- stream mode ---------------------------------------------------------------------------------
log "archive_mode off, restart; dr wal stream --target wals"
psql_in postgres -c "ALTER SYSTEM SET archive_mode = off"
"${as_pg[@]}" "$pg_bin/pg_ctl" restart -w -t 120 -D "$pgdata" -m fast -l "$work/postgres.log" \
    -o "-p $pg_port" >/dev/null
/usr/bin/time -v -o "$work/time.stream" "$dr" --config "$home/dr.toml" --env-file "$home/dr.env" \
    wal stream --target wals 2>"$work/stream.log" &
stream_pid=$!
for _ in $(seq 1 60); do
    stream_dr_pid=$(pgrep -P "$stream_pid" || true)
    [[ $(psql_in postgres -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dr_wals' AND active") == 1 ]] && break
    sleep 1
done
# Primed: a segment switch the stream stores before the run, so that every sample has a newest
# stored segment.
psql_in postgres -c "CREATE TABLE IF NOT EXISTS ticks (t int); INSERT INTO ticks VALUES (1)"
primed=$(psql_in postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 120); do
    newest=$(curl -fsS -H 'Accept: application/json' "$filer_wal/wals/wal/${primed:0:16}/?limit=1000" 2>/dev/null |
        grep -o "\"[0-9A-F]\{24\}\.rec\"" | sort | tail -n 1 | tr -d '"' || true)
    [[ ${newest:0:24} < $primed ]] || break
    sleep 1
done
load stream
read -r s_n s_max s_med s_rate s_mibs s_load s_spool s_tps s_busy s_other <<<"$(lag_stats stream)"
s_drain=$drain_s
[[ -n $stream_dr_pid ]] && kill -TERM "$stream_dr_pid" 2>/dev/null || true
stream_rc=0
wait "$stream_pid" || stream_rc=$?
stream_pid=
stream_dr_pid=
stream_rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$work/time.stream")
((stream_rc == 0)) || { failed+=("dr wal stream (exit $stream_rc)"); tail -n 20 "$work/stream.log" >&2; }
psql_in postgres -c "SELECT pg_drop_replication_slot('dr_wals')" >/dev/null || true
"${as_pg[@]}" "$pg_bin/pg_ctl" stop -w -D "$pgdata" -m fast >/dev/null # the recoveries get the CPUs

# --- recovery ---------------------------------------------------------------------------------------
# The fetches run as the server runs restore_command: in a data directory (here one holding only
# pg_wal, which is the floor's local WAL directory), %p = pg_wal/NAME.
fetch_dd=$work/fetch-data
waldir=$fetch_dd/pg_wal
mkdir -p "$waldir"
[[ $(id -u) != 0 ]] || chown -R postgres:postgres "$fetch_dd"
restore_command=
# The end a recovery reached: where it stopped ("recovery stopping after WAL location (LSN)
# "X"", or the record it names) and the last segment it restored.
recovery_end() {
    echo "$(grep -o 'recovery stopping [^,]*' "$1" | tail -n 1 | grep -o '[0-9A-F]*/[0-9A-F]*' | tail -n 1) $(grep -o 'restored log file "[0-9A-F]*"' "$1" | tail -n 1 | tr -d '"' | awk '{print $4}')"
}
# Seconds from the first to the last "restored log file" line of a recovery log (the base's
# log_line_prefix = '%m [%p] ' gives the time): the replay, without start and stop.
replay_span() { python3 ci/bench_wal.py replay-span "$1"; }
rec_i=0
before_dr_recovery() { rm -rf "$work/rec-dr"; }
after_dr_recovery() {
    cp "$work/rec-dr/dr-recovery.log" "$work/recovery-dr.$rec_i.log" 2>/dev/null || true
    cp "$work/dr-recovery.out" "$work/dr-recovery.$rec_i.out"
    [[ -n $restore_command ]] || restore_command=$(python3 ci/bench_wal.py restore-command "$work/rec-dr/postgresql.auto.conf")
    rm -rf "$work/rec-dr"
}
before_floor_recovery() { rm -rf "$work/rec-floor" "$work/rec-floor.sock"; }
after_floor_recovery() {
    cp "$work/rec-floor/recovery.log" "$work/recovery-floor.$rec_i.log" 2>/dev/null || true
    rm -rf "$work/rec-floor" "$work/rec-floor.sock"
}
# recover NAME CMD...: one timed run (measure, with the CPU sampled), its time, RSS and CPU
# added to rec_secs[NAME], rec_rss[NAME], rec_cpu[NAME].
declare -A rec_secs rec_rss rec_cpu
recover() {
    local name=$1
    shift
    cpu_start "$name.$rec_i"
    runs=1 measure "$name" "$@"
    cpu_stop
    rec_cpu[$name]+="$cpu_last "
    rec_secs[$name]+="${secs[$name]} "
    if ((${rss[$name]} > ${rec_rss[$name]:-0})); then rec_rss[$name]=${rss[$name]}; fi
}
recover_dr() {
    recover dr_recovery bash -c "'$dr' --config '$home/dr.toml' --env-file '$home/dr.env' restore --at '$target_lsn' --target wala --to-dir '$work/rec-dr' --start > '$work/dr-recovery.out' 2>&1"
}

# Run 1 of dr first: the floor's WAL is fetched with the restore_command it wrote.
rec_i=1
recover_dr

# Not timed: every segment from the base's start, fetched with the restore_command dr wrote
# (as the server runs it: sh -c, the postgres user, a clean environment), each in
# /usr/bin/time: that is the fetch measurement; and the base tar, decrypted.
# The prefetch workers that fetch starts (detached `dr wal prefetch`, in their own process
# group: /usr/bin/time of the fetch does not see them) are polled for their VmHWM.
python3 ci/bench_wal.py procmax "$dr" "$work/prefetch.rss" &
procmax_pid=$!
log "fetching the WAL with the restore_command dr wrote, one segment at a time: $restore_command"
fetch_start=$(date +%s.%N)
n=$((base_start_bytes / 16777216))
wal_segments=0
while [[ -n $restore_command ]]; do
    name=$(seg_name 1 "$n")
    cmd=${restore_command//%f/$name}
    cmd=${cmd//%p/pg_wal/$name}
    rc=0
    (cd "$fetch_dd" && "${as_pg[@]}" env -i PATH=/usr/bin:/bin sh -c "/usr/bin/time -f '%e %M %x %U %S' -a -o '$home/fetch.times' $cmd") 2>>"$work/fetch.log" || rc=$?
    ((rc == 0)) || break
    wal_segments=$((wal_segments + 1))
    n=$((n + 1))
done
fetch_s=$(awk -v a="$fetch_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
sleep 2 # the last worker stops at the first segment not archived
kill "$procmax_pid" 2>/dev/null || true
wait "$procmax_pid" 2>/dev/null || true
procmax_pid=
read -r prefetch_kib prefetch_workers prefetch_cpu <"$work/prefetch.rss" || { prefetch_kib=0; prefetch_workers=0; prefetch_cpu=n/a; }
prefetch_rss=$(mib "$prefetch_kib")
[[ ${rc:-1} == 1 ]] || { failed+=("dr wal fetch of $name (exit $rc)"); tail -n 5 "$work/fetch.log" >&2; }
read -r f_n f_med f_p90 f_max f_rss f_bad f_cpu f_cpu_total <<<"$(time_stats "$home/fetch.times" 0)"
((rc != 1 || f_bad == 0)) || f_bad=$((f_bad - 1)) # the last call: not archived, the end
wal_segments_files=$(find "$waldir" -maxdepth 1 -name '[0-9A-F]*' -type f | wc -l)
((wal_segments_files == wal_segments)) || failed+=("fetched $wal_segments segments, $wal_segments_files files in $waldir")
wal_bytes=$((wal_segments * 16777216))
curl -fsS "$filer_wal/$base_tar_key" | age -d -i "$home/identity.txt" | zstd -dq >"$work/base.tar"
chmod 644 "$work/base.tar"

# The floor: untar, recovery settings (restore_command cp, the same target), start as dr
# --start does, wait until it pauses at the target, stop.
cat >"$work/floor.conf" <<EOF
restore_command = 'cp $waldir/%f %p'
recovery_target_timeline = '1'
recovery_target_lsn = '$target_lsn'
EOF
chmod 644 "$work/floor.conf"
cat >"$work/floor.sh" <<EOF
set -e
d=$work/rec-floor
mkdir -m 700 "\$d" "\$d.sock"
${as_pg[*]:+chown postgres:postgres "\$d" "\$d.sock"}
${as_pg[*]} tar -xf "$work/base.tar" -C "\$d"
${as_pg[*]} sh -c 'cat "\$1" >> "\$2/postgresql.auto.conf" && touch "\$2/recovery.signal"' _ "$work/floor.conf" "\$d"
${as_pg[*]} "$pg_bin/pg_ctl" start -W -D "\$d" -l "\$d/recovery.log" -o "-c listen_addresses='' -c unix_socket_directories='\$d.sock' -c archive_mode=off -c hot_standby=on -c lc_messages=C -c logging_collector=off -c recovery_target_action=pause" >/dev/null
until grep -qs 'pausing at the end of recovery' "\$d/recovery.log"; do
    if grep -qs 'FATAL' "\$d/recovery.log"; then tail -n 5 "\$d/recovery.log" >&2; exit 1; fi
    sleep 0.3
done
${as_pg[*]} "$pg_bin/pg_ctl" stop -w -m fast -D "\$d" >/dev/null
EOF
recover floor_recovery bash "$work/floor.sh"
for ((rec_i = 2; rec_i <= recovery_runs; rec_i++)); do
    recover_dr
    recover floor_recovery bash "$work/floor.sh"
done
for name in dr_recovery floor_recovery; do
    all_secs[$name]=${rec_secs[$name]% }
    rss[$name]=${rec_rss[$name]:-0}
    if [[ ${rec_secs[$name]} == *failed* ]]; then secs[$name]=failed; else secs[$name]=$(tr ' ' '\n' <<<"${all_secs[$name]}" | median); fi
done
# --- drill (issue 20): dr verify --pitr to the same LSN, in a sandbox under its own temp dir ---
# Its time (plan, base download + unpack, pg_verifybackup, recovery, pg_amcheck, checks) and
# the sandbox's peak disk, sampled every 0.5 s with du.
drill_tmp=$work/drill-tmp
rm -rf "$drill_tmp" && mkdir -p "$drill_tmp" && chmod 0777 "$drill_tmp"
(
    peak=0
    while sleep 0.5; do
        b=$(du -sb "$drill_tmp" 2>/dev/null | cut -f1)
        if ((${b:-0} > peak)); then peak=$b && echo "$peak" >"$work/drill.peak"; fi
    done
) &
drill_sampler=$!
runs=1 measure dr_drill bash -c "'$dr' --config '$home/dr.toml' --env-file '$home/dr.env' verify --pitr --target wala --at '$target_lsn' --temp-dir '$drill_tmp' > '$work/drill.out' 2>&1"
kill "$drill_sampler" 2>/dev/null || true
wait "$drill_sampler" 2>/dev/null || true
drill_peak=$(bytes_mib "$(cat "$work/drill.peak" 2>/dev/null || echo 0)")
drill_phases=$(grep -E '^  (base_fetch|pg_verifybackup|recover|checks) ' "$work/drill.out" | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//')

# --- into a database (issue 20): dr restore --at LSN --to URL against doing it by hand ---------
# dr: the sandbox recovery from S3, then the section streams (--jobs 2) into a new database of
# the bench server. By hand: the floor's recovery (the decrypted base and the fetched WAL from
# local disk, paused at the same LSN), then `pg_dump -Fc -Z0 | pg_restore` into a new database.
# The bench server runs again for them, with archive_mode off (nothing more to archive).
# Each --recovery-runs times: the medians are compared.
"${as_pg[@]}" "$pg_bin/pg_ctl" start -w -t 60 -D "$pgdata" -l "$work/pg-into.log" -o "-p $pg_port -c archive_mode=off" >/dev/null
into_tmp=$work/into-tmp
drop_into() { PGOPTIONS='-c client_min_messages=warning' psql_in postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null; }
# What both must hold: the pgbench tables' counts and balances at the target LSN.
into_digest() {
    psql_in "$1" -c "SELECT (SELECT count(*) || '/' || sum(abalance) FROM pgbench_accounts) || ' ' ||
        (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches)" 2>/dev/null || echo none
}
before_into_dr() { drop_into into_dr; rm -rf "$into_tmp" && mkdir -p "$into_tmp" && chmod 0777 "$into_tmp"; }
after_into_dr() { into_dr_digest=$(into_digest into_dr); drop_into into_dr; rm -rf "$into_tmp"; }
runs=$recovery_runs measure into_dr bash -c "'$dr' --config '$home/dr.toml' --env-file '$home/dr.env' restore --at '$target_lsn' --target wala --to '$(url into_dr)' --jobs 2 --yes --temp-dir '$into_tmp' > '$work/into-dr.out' 2>&1"
# The floor's script up to the pause, then the copy, then the stop.
sed -e '/pg_ctl" stop/d' "$work/floor.sh" >"$work/by-hand.sh"
cat >>"$work/by-hand.sh" <<EOF
psql -X -q -d '$(url postgres)' -c 'CREATE DATABASE into_hand'
${as_pg[*]} pg_dump -Fc -Z0 -h "\$d.sock" -d postgres | pg_restore --exit-on-error -d '$(url into_hand)'
${as_pg[*]} "$pg_bin/pg_ctl" stop -w -m fast -D "\$d" >/dev/null
EOF
before_by_hand() { drop_into into_hand; rm -rf "$work/rec-floor" "$work/rec-floor.sock"; }
after_by_hand() { hand_digest=$(into_digest into_hand); drop_into into_hand; rm -rf "$work/rec-floor" "$work/rec-floor.sock"; }
runs=$recovery_runs measure by_hand bash -o pipefail "$work/by-hand.sh"
"${as_pg[@]}" "$pg_bin/pg_ctl" stop -w -D "$pgdata" -m fast >/dev/null
[[ ${into_dr_digest:-none} != none && $into_dr_digest == "${hand_digest:-}" ]] ||
    failed+=("dr restore --at --to and the by-hand copy differ (dr: ${into_dr_digest:-none}; by hand: ${hand_digest:-none})")
into_phases=$(grep -E '^  (dump_staged|recover|restore|total) ' "$work/into-dr.out" | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//' || true)

read -r dr_redo dr_last <<<"$(recovery_end "$work/recovery-dr.1.log")"
read -r floor_redo floor_last <<<"$(recovery_end "$work/recovery-floor.1.log")"
same_end=no
[[ -n $dr_redo && $dr_redo == "$floor_redo" && $dr_last == "$floor_last" ]] && same_end=yes
[[ $same_end == yes ]] || failed+=("recoveries ended at different points (dr $dr_redo $dr_last, floor $floor_redo $floor_last)")
dr_replay_s=$(grep -ho 'recovery reached the target in [0-9.]* s' "$work"/dr-recovery.[0-9]*.out | awk '{print $6}' | median)
dr_span=$(for f in "$work"/recovery-dr.[0-9]*.log; do replay_span "$f"; done | grep -v n/a | median)
floor_span=$(for f in "$work"/recovery-floor.[0-9]*.log; do replay_span "$f"; done | grep -v n/a | median)

swap_after=$(awk '/^pswpin|^pswpout/ {s += $2} END {print s}' /proc/vmstat)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------------
b_ratio=$(ratio "${secs[dr_base]}" "${secs[pg_basebackup]}")
b1_ratio=$(ratio "${secs[dr_base_z1]}" "${secs[pg_basebackup]}")
s1_ratio=$(ratio "${secs[stock_base_z1]}" "${secs[pg_basebackup]}")
r_ratio=$(ratio "${secs[dr_recovery]}" "${secs[floor_recovery]}")
i_ratio=$(ratio "${secs[into_dr]}" "${secs[by_hand]}")
wal_mib=$(bytes_mib "$wal_bytes")
fetch_rate=$(awk -v b="$wal_bytes" -v s="$fetch_s" 'BEGIN { if (s > 0) printf "%.0f", b / 1048576 / s; else print "n/a" }')
swap_total=$(awk '/SwapTotal/ {printf "%.0f MiB", $2 / 1024}' /proc/meminfo)

cat <<EOF

## dr WAL benchmark, scale $scale, ${wal_secs} s per mode ($(date -u +%Y-%m-%dT%H:%MZ))

Command: \`bash ci/bench-wal.sh --scale $scale --runs $runs --wal-secs $wal_secs --min-wal-mib $min_wal_mib --recovery-runs $recovery_runs\` (= \`bash ci/bench.sh --wal-only\` with these flags) $(commit_note). Whole run: $(((SECONDS - started) / 60)) min.

$(machine_line)
Load average (1, 5, 15 min): $load_before before the run, $load_after after it; means of the 1-min value while pgbench ran (its 8 clients and their 8 backends included): archive mode $a_load, stream mode $s_load. CPU while pgbench ran (both cores = 100%): archive mode $a_busy% busy, of it at least $a_other% other work than this benchmark; stream mode $s_busy%, at least $s_other% other. Swap: $swap_total configured, $((swap_after - swap_before)) pages swapped in or out during the run.
Cluster: $(bytes_mib "$db_bytes") MiB (pgbench scale $scale), PostgreSQL tuned as ci/bench.sh but with \`full_page_writes = on\` and \`checkpoint_timeout = 5min\` (the defaults). Base tar $(bytes_mib "$base_raw") MiB raw, $(bytes_mib "$base_stored") MiB stored. Recovery: base $base_id + $wal_segments segments ($wal_mib MiB) of WAL after its start: the archive-mode run, then $topup_s s more pgbench with a checkpoint every 5 s (archive mode, not sampled) to reach --min-wal-mib.

| run | wall (s) | peak RSS (MiB) | CPU busy / other work (%) |
| --- | ---: | ---: | ---: |
| \`pg_basebackup -Ft -D - -X none -c fast > /dev/null\` | ${secs[pg_basebackup]} | $(rss_mib pg_basebackup) | ${cpu_of[pg_basebackup]} |
| \`pg_basebackup … \| zstd -3 \| age > /dev/null\` (stock tools, for scale) | ${secs[stock_base]} | $(rss_mib stock_base) | ${cpu_of[stock_base]} |
| the same with \`zstd -1\` | ${secs[stock_base_z1]} | $(rss_mib stock_base_z1) | ${cpu_of[stock_base_z1]} |
| \`dr backup --physical\` (zstd + age, to S3; waits for its WAL) | ${secs[dr_base]} | $(rss_mib dr_base) | ${cpu_of[dr_base]} |
| the same with \`zstd_level = 1\` | ${secs[dr_base_z1]} | $(rss_mib dr_base_z1) | ${cpu_of[dr_base_z1]} |
| floor recovery: untar the base from local disk, \`restore_command = 'cp DIR/%f %p'\` | ${secs[floor_recovery]} | $(rss_mib floor_recovery) | ${rec_cpu[floor_recovery]% } |
| \`dr restore --at LSN --to-dir DIR --start\` (from S3) | ${secs[dr_recovery]} | $(rss_mib dr_recovery) | ${rec_cpu[dr_recovery]% } |
| by hand: the floor recovery, then \`pg_dump -Fc -Z0 \| pg_restore\` into a new database | ${secs[by_hand]} | $(rss_mib by_hand) | |
| \`dr restore --at LSN --to URL --jobs 2\` (sandbox recovery from S3, then into a new database) | ${secs[into_dr]} | $(rss_mib into_dr) | |
| \`dr verify --pitr --at LSN\` (a drill: sandbox from S3, pg_verifybackup, recovery, pg_amcheck) | ${secs[dr_drill]} | $(rss_mib dr_drill) | |

CPU: the mean over half-second samples while the row's runs ran (recoveries: per run), both cores = 100%; "other work" is what processes outside this benchmark used (at least).

Waits: with \`-X none\` the server itself waits for the stop segment and the backup history file to be archived (two \`dr wal push\` calls; it checks once a second) before either client ends: both rows include that. dr's log (medians): $base_stream_s s from its start to "base backup streamed" (its pg_basebackup done, that wait included), then $base_wait_s s "waiting for its WAL in the repository" and the commit: dr's own wait.
Recovery (medians of $recovery_runs runs each, dr and the floor taking turns): \`dr restore --start\` spent $dr_replay_s s from starting the server to the end of recovery (its report), the rest planning and unpacking the base; from the first to the last restored segment (server logs) dr took $dr_span s, the floor $floor_span s.
Drill: $drill_phases; the sandbox's peak disk $drill_peak MiB (the base tar is $(bytes_mib "$base_raw") MiB raw).
Into a database: both copies hold the same pgbench counts and balances at the target (accounts count/sum, history count, branches sum): ${into_dr_digest:-none}; dr's own report: ${into_phases:-n/a}.
Both recoveries stopped at the same point (target LSN $target_lsn): $same_end (dr: stopped at $dr_redo, last segment $dr_last; floor: $floor_redo, $floor_last).

| archiving, \`pgbench -c 8 -j 2 -T $wal_secs\` | tps | WAL MiB/s | segments stored/s | lag max | lag median | samples | drained after pgbench (s) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| archive: \`archive_command = dr wal push\` | $a_tps | $a_mibs | $a_rate | $a_max | $a_med | $a_n | $a_drain |
| stream: \`dr wal stream\` (partials every 30 s) | $s_tps | $s_mibs | $s_rate | $s_max | $s_med | $s_n | $s_drain |

Lag: completed segments not yet stored, sampled every 3 s (archive: pg_stat_archiver; stream: the newest segment record in the repository). Stream mode: at most $s_spool files in the spool at a sample.
\`dr wal push\` during the archive run: $p_n calls, wall median $p_med s, p90 $p_p90 s, max $p_max s, CPU (user + system) median $p_cpu s, $p_bad failed; all $all_n calls of the run: peak RSS $all_rss MiB, $all_bad failed.
\`dr wal fetch\` (the restore_command dr wrote, with its prefetch spool, one segment after another as PostgreSQL calls it but with no replay in between): $f_n calls, wall median $f_med s, p90 $f_p90 s, max $f_max s, CPU median $f_cpu s ($f_cpu_total s in all), $f_bad failed besides the final "not archived"; $wal_segments segments in $fetch_s s ($fetch_rate MiB/s); the $prefetch_workers prefetch workers used $prefetch_cpu s of CPU (as last seen every 50 ms).

| goal | measured | target | |
| --- | ---: | ---: | --- |
| base backup time / \`pg_basebackup -Ft -D - -X none\` | $(x "$b_ratio") | <= 1.05x | $(verdict "$b_ratio" 1.05) |
| the same with \`zstd_level = 1\` | $(x "$b1_ratio") | <= 1.05x | $(verdict "$b1_ratio" 1.05) |
| (for scale: stock \`pg_basebackup \| zstd -1 \| age\`) | $(x "$s1_ratio") | | |
| archive mode lag, max over the run | $(with_unit "$a_max" segments) | <= 2 | $(verdict "$a_max" 2) |
| stream mode lag, max over the run | $(with_unit "$s_max" segments) | <= 2 | $(verdict "$s_max" 2) |
| recovery time / floor ($wal_mib MiB of WAL) | $(x "$r_ratio") | <= 1.15x | $(verdict "$r_ratio" 1.15) |
| \`dr restore --at --to URL\` time / by hand | $(x "$i_ratio") | <= 1.10x | $(verdict "$i_ratio" 1.10) |
| \`dr wal push\` peak RSS (max of $all_n) | $(with_unit "$all_rss" MiB) | <= 64 MiB | $(verdict "$all_rss" 64) |
| \`dr wal fetch\` peak RSS (max of $f_n) | $(with_unit "$f_rss" MiB) | <= 64 MiB | $(verdict "$f_rss" 64) |
| its prefetch workers (\`dr wal prefetch\`, polled, $prefetch_workers seen) | $(with_unit "$prefetch_rss" MiB) | <= 64 MiB | $(verdict "$prefetch_rss" 64) |
| \`dr wal stream\` peak RSS (with pg_receivewal) | $(with_unit "$stream_rss" MiB) | <= 64 MiB | $(verdict "$stream_rss" 64) |

All runs (s): pg_basebackup ${all_secs[pg_basebackup]}; stock pipeline ${all_secs[stock_base]}; with zstd -1 ${all_secs[stock_base_z1]}; dr backup --physical ${all_secs[dr_base]}; with zstd_level = 1 ${all_secs[dr_base_z1]}; floor recovery ${all_secs[floor_recovery]}; dr recovery ${all_secs[dr_recovery]}; drill ${secs[dr_drill]}; into a database: dr ${all_secs[into_dr]}, by hand ${all_secs[by_hand]}.
EOF

if ((${#failed[@]})); then
    log "failed: ${failed[*]}"
    exit 1
fi
