#!/usr/bin/env bash
# Build the dr container image without any registry: dr:VERSION and dr:latest.
#
# Usage: ci/image.sh [DR_BINARY]      (or DR_BINARY=path; default target/release/dr)
#   Releases: `cargo build --release` then `ci/image.sh target/release/dr`.
#   CI passes the debug build (target/debug/dr) to avoid an 11-minute release build; its
#   debug info is stripped on the way in.
#
# Two layers:
#   dr-base:KEY   a minimal Debian trixie rootfs (debootstrap --variant=minbase) with
#                 postgresql-17 (client tools, and initdb/pg_ctl/postgres for
#                 `dr verify --sandbox local`), age, zstd, ca-certificates, PostgreSQL 15's
#                 pg_dump/pg_dumpall/pg_restore/psql (Debian bookworm's, from this host's
#                 postgresql-client-15), and the user dr (uid/gid 65532). Slimmed: no apt
#                 caches, docs, man pages, locales, perl or LLVM JIT. Built once per KEY (a hash
#                 of this script's base recipe and the PG 15 binaries) and reused.
#   dr:VERSION    FROM dr-base:KEY: /usr/local/bin/dr, USER 65532, ENTRYPOINT ["dr"],
#                 HEALTHCHECK `dr status`. Rebuilt every run (seconds).
# Not in the image: PostgreSQL 16 and 18 client tools (no Debian release ships them and the
# PGDG apt repository is not reachable here). dr uses the oldest newer pg_dump it finds, so a
# 16 server is dumped with 17's tools; an 18 server needs `backup.pg_bin_dir` pointing at 18
# tools mounted into the container (or an image built with PGDG's postgresql-client-18).
set -euo pipefail

script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$script")/.."
log() { echo "image: $*" >&2; }
start=$SECONDS

bin="${1:-${DR_BINARY:-target/release/dr}}"
[[ -x $bin ]] || { log "no dr binary at $bin (cargo build --release, or pass the path)"; exit 1; }
version=$("$bin" --version | awk '{print $2}')
[[ -n $version ]] || { log "cannot read the version of $bin"; exit 1; }
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
packages=postgresql-17,age,zstd,ca-certificates
pg15=/usr/lib/postgresql/15/bin
pg15_tools=(pg_dump pg_dumpall pg_restore psql)
uid=65532

for t in "${pg15_tools[@]}"; do
    [[ -x $pg15/$t ]] || { log "missing $pg15/$t (apt-get install postgresql-client-15; ci/setup.sh does)"; exit 1; }
done
# The base's cache key: its recipe (this script up to the marker) and the PG 15 binaries.
key=$({
    sed -n '1,/^# --- end of the base recipe/p' "$script"
    for t in "${pg15_tools[@]}"; do sha256sum "$pg15/$t"; done
} | sha256sum | cut -c1-16)
base="dr-base:$key"

if docker image inspect "$base" >/dev/null 2>&1; then
    log "$base present (cached)"
else
    command -v debootstrap >/dev/null || { log "debootstrap is missing (run ci/setup.sh)"; exit 1; }
    work=$(mktemp -d /tmp/dr-image.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    root="$work/rootfs"
    log "debootstrap $suite $packages into $root"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }
    # PostgreSQL 15 client tools (bookworm's; they need only libpq.so.5, which trixie's
    # libpq5 provides, and glibc, which is newer here).
    mkdir -p "$root/usr/lib/postgresql/15/bin"
    for t in "${pg15_tools[@]}"; do cp "$pg15/$t" "$root/usr/lib/postgresql/15/bin/$t"; done
    # Slim: what dr never runs. postgresql-common's perl wrappers in /usr/bin go with perl;
    # dr calls /usr/lib/postgresql/MAJOR/bin/* directly. No JIT (postgres runs without it).
    rm -rf "$root/var/lib/postgresql/17" "$root/etc/postgresql/17" \
        "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/usr/share/bash-completion \
        "$root"/usr/lib/x86_64-linux-gnu/libLLVM* "$root"/usr/lib/postgresql/17/lib/llvmjit* \
        "$root"/usr/lib/postgresql/17/lib/bitcode \
        "$root"/usr/share/perl "$root"/usr/lib/x86_64-linux-gnu/perl \
        "$root"/usr/bin/pg_* "$root"/usr/bin/psql "$root"/usr/bin/createdb "$root"/usr/bin/dropdb \
        "$root"/var/log/*.log "$root"/var/log/apt "$root"/tmp/*
    # The user: a fixed uid in /etc/passwd (initdb looks its user up), home /var/lib/dr.
    echo "dr:x:$uid:$uid:dr:/var/lib/dr:/usr/sbin/nologin" >>"$root/etc/passwd"
    echo "dr:x:$uid:" >>"$root/etc/group"
    echo "dr:!:20000::::::" >>"$root/etc/shadow"
    mkdir -p "$root/var/lib/dr" "$root/etc/dr" "$root/repo"
    chown "$uid:$uid" "$root/var/lib/dr" "$root/repo"
    chmod 1777 "$root/tmp"
    log "importing $base ($(du -sh "$root" | cut -f1) rootfs)"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/bin:/usr/lib/postgresql/17/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        - "$base" >/dev/null
    rm -rf "$work"
    trap - EXIT
fi
# --- end of the base recipe (everything above is part of the base's cache key) -----------

ctx=$(mktemp -d /tmp/dr-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/dr"
strip --strip-debug "$ctx/dr" 2>/dev/null || log "strip failed: the binary goes in with its debug info"
chmod 755 "$ctx/dr"
cat >"$ctx/Dockerfile" <<EOF
FROM $base
COPY dr /usr/local/bin/dr
ENV DR_CONFIG=/etc/dr/dr.toml TMPDIR=/tmp HOME=/var/lib/dr
# /restore: where \`dr restore --to-dir\` writes a recovered data directory; a new volume
# mounted there starts out owned by dr (deploy/compose: the recover service).
RUN mkdir -m 700 /restore && chown $uid:$uid /restore
WORKDIR /var/lib/dr
USER $uid:$uid
# Healthy = \`dr status\` exits 0: every target has a backup younger than
# status.max_backup_age_hours, no failed verification, nothing damaged (exit 8 otherwise).
# It reads the repository, so it runs every 10 minutes. It judges the backups, which is what
# a dr container is for; the daemon's own liveness shows in its heartbeat (\`dr status\`).
HEALTHCHECK --interval=10m --timeout=2m --start-period=30m --retries=1 CMD ["dr", "status"]
LABEL org.opencontainers.image.title=dr org.opencontainers.image.version=$version
ENTRYPOINT ["dr"]
CMD ["--help"]
EOF
log "building dr:$version and dr:latest from $bin"
DOCKER_BUILDKIT=0 docker build -q -t "dr:$version" -t dr:latest "$ctx" >/dev/null 2>"$ctx/build.err" ||
    { grep -v -i deprecat "$ctx/build.err" >&2 || true; exit 1; }

# Check: runs as 65532, finds its tools, age and zstd are there; and what a drill
# (`dr verify --pitr`) needs of 17: pg_ctl/postgres, pg_verifybackup, pg_amcheck and amcheck.
docker run --rm --entrypoint /usr/bin/id dr:latest -u | grep -qx "$uid" || { log "not running as $uid"; exit 1; }
docker run --rm dr:latest --version >/dev/null
for t in age zstd /usr/lib/postgresql/15/bin/pg_dump /usr/lib/postgresql/17/bin/pg_dump \
    /usr/lib/postgresql/17/bin/initdb /usr/lib/postgresql/17/bin/pg_ctl \
    /usr/lib/postgresql/17/bin/postgres /usr/lib/postgresql/17/bin/pg_verifybackup \
    /usr/lib/postgresql/17/bin/pg_amcheck; do
    docker run --rm --entrypoint "$t" dr:latest --version >/dev/null 2>&1 || { log "$t does not run"; exit 1; }
done
docker run --rm --entrypoint /usr/bin/test dr:latest -f /usr/share/postgresql/17/extension/amcheck.control ||
    { log "the amcheck extension of 17 is missing (a drill's pg_amcheck needs it)"; exit 1; }
size=$(docker image inspect -f '{{.Size}}' dr:latest)
log "built dr:$version and dr:latest ($((size / 1000000)) MB) in $((SECONDS - start)) s"
