#!/usr/bin/env bash
# Build a local Postgres Docker image without any registry: debootstrap a minimal Debian
# with the Debian postgresql-MAJOR package, add an entrypoint that behaves enough like the
# official image (POSTGRES_PASSWORD / POSTGRES_USER / POSTGRES_DB), and `docker import` it as
# dr-test/postgres:MAJOR, also tagged postgres:MAJOR so that a default `postgres:{major}`
# image resolves locally.
#
# Usage: ci/pg-image.sh [MAJOR]   (default 15)
#   15: Debian bookworm's postgresql-15;  17: Debian trixie's postgresql-17.
#   (Each Debian release ships one major; SUITE=... overrides the choice.)
# Idempotent: does nothing when the image already exists. FORCE=1 rebuilds.
# PG_ROOTFS=DIR: copy DIR (a `debootstrap --variant=minbase --include=postgresql-MAJOR` of
# the same suite, e.g. the host copy ci/setup.sh keeps under /opt/dr-test/pg17/rootfs)
# instead of running debootstrap again; DIR itself is left as it is.
set -euo pipefail

major="${1:-15}"
image="dr-test/postgres:${major}"
alias_tag="postgres:${major}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
case "$major" in
15) default_suite=bookworm ;;
17) default_suite=trixie ;;
*) default_suite="" ;;
esac
suite="${SUITE:-$default_suite}"

log() { echo "pg-image: $*" >&2; }

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image already present"
    if ! docker image inspect "$alias_tag" >/dev/null 2>&1; then
        docker tag "$image" "$alias_tag"
        log "tagged $alias_tag"
    fi
    exit 0
fi

if [[ -z $suite ]]; then
    log "no Debian release known to ship postgresql-$major (bookworm: 15, trixie: 17); set SUITE"
    exit 1
fi
if [[ -z ${PG_ROOTFS:-} ]]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (run ci/setup.sh)"; exit 1; }
fi

start=$(date +%s)
old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
work=$(mktemp -d /tmp/dr-pg-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

if [[ -n ${PG_ROOTFS:-} ]]; then
    [[ -x $PG_ROOTFS/usr/lib/postgresql/$major/bin/postgres ]] ||
        { log "PG_ROOTFS=$PG_ROOTFS has no usr/lib/postgresql/$major/bin/postgres"; exit 1; }
    log "copying $PG_ROOTFS into $root"
    cp -a "$PG_ROOTFS" "$root"
else
    log "debootstrap $suite postgresql-$major from $mirror into $root"
    debootstrap --variant=minbase --include="postgresql-${major}" \
        "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 50 "$work/debootstrap.log" >&2
        exit 1
    }
fi

# postgresql-MAJOR includes contrib since PG 10 (postgresql-contrib-MAJOR is a virtual package).
# Drop the cluster the package's postinst created, and slim the image: no apt caches or docs.
rm -rf "$root/var/lib/postgresql/${major}" "$root/etc/postgresql/${major}"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

cat >"$root/usr/local/bin/docker-entrypoint.sh" <<EOF
#!/bin/bash
# Minimal stand-in for the official postgres image entrypoint.
set -euo pipefail
PGBIN=/usr/lib/postgresql/${major}/bin
EOF
cat >>"$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

as_postgres() {
    if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi
}

# Allow `docker run IMAGE psql ...` and friends.
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && [ "$1" != postgres ]; then
    exec "$@"
fi
if [ "${1:-}" = postgres ]; then shift; fi

mkdir -p "$PGDATA" /var/run/postgresql
if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        echo "       (set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    chown postgres "$pwfile"
    initdb_args=(--username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust)
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        initdb_args+=(--pwfile="$pwfile" --auth-host="$auth")
    else
        initdb_args+=(--auth-host="$auth")
    fi
    # shellcheck disable=SC2086
    as_postgres "$PGBIN/initdb" -D "$PGDATA" "${initdb_args[@]}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    {
        echo "host all all 0.0.0.0/0 $auth"
        echo "host all all ::/0 $auth"
    } >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.auto.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode: no server, so the readiness log line appears only once, for real.
        echo "CREATE DATABASE \"$POSTGRES_DB\";" |
            as_postgres "$PGBIN/postgres" --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi

# The official image's init phase makes the readiness line appear on stdout too (clients
# such as testcontainers' postgres module wait for it on both streams). Say it on stdout once
# the real server answers. This helper becomes a child of postgres: it always exits 0, which
# the postmaster ignores for a pid it does not know.
(
    for _ in $(seq 1 600); do
        if "$PGBIN/pg_isready" -q -h /var/run/postgresql -p 5432 -U "$POSTGRES_USER" -d postgres 2>/dev/null; then
            echo "$(date -u '+%F %T.%3N UTC') [entrypoint] LOG:  database system is ready to accept connections"
            break
        fi
        sleep 0.2
    done
    exit 0
) </dev/null &

exec_args=("$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@")
if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${exec_args[@]}"
fi
exec "${exec_args[@]}"
EOF
chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"

log "importing $image"
tar -C "$root" -c . | docker import \
    -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    -c 'CMD ["postgres"]' \
    -c "ENV PATH=/usr/lib/postgresql/${major}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    -c 'ENV PGDATA=/var/lib/postgresql/data' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'EXPOSE 5432' \
    - "$image" >/dev/null
docker tag "$image" "$alias_tag"

# Verify: start it, connect with psql over TCP with the password, remove it.
log "verifying $image"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cid=$(docker run -d --rm -e POSTGRES_PASSWORD=x -p "127.0.0.1:${port}:5432" "$image")
cleanup_container() { docker rm -f "$cid" >/dev/null 2>&1 || true; }
trap 'cleanup_container; rm -rf "$work"' EXIT
ok=0
for _ in $(seq 1 60); do
    if PGPASSWORD=x psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c 'select version()' 2>/dev/null | grep -q "PostgreSQL ${major}"; then
        ok=1
        break
    fi
    sleep 0.5
done
if [ "$ok" != 1 ]; then
    log "verification failed; container log:"
    docker logs "$cid" >&2 || true
    docker image rm -f "$image" "$alias_tag" >/dev/null 2>&1 || true
    exit 1
fi
# The readiness line, once on stderr (postgres) and once on stdout (the entrypoint helper).
ready_line='database system is ready to accept connections'
for _ in $(seq 1 20); do
    out=$(docker logs "$cid" 2>/dev/null)
    err=$(docker logs "$cid" 2>&1 >/dev/null)
    if [[ $out == *"$ready_line"* && $err == *"$ready_line"* ]]; then break; fi
    sleep 0.5
done
if [[ $out != *"$ready_line"* || $err != *"$ready_line"* ]]; then
    log "verification failed: the readiness line is not on both stdout and stderr"
    docker logs "$cid" >&2 || true
    docker image rm -f "$image" "$alias_tag" >/dev/null 2>&1 || true
    exit 1
fi
new_id=$(docker image inspect -f '{{.Id}}' "$image")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true # the image FORCE=1 replaced
fi
log "built and verified $image (also tagged $alias_tag) in $(($(date +%s) - start))s"
