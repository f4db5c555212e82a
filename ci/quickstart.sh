#!/usr/bin/env bash
# dr in five minutes, on a fresh Debian bookworm machine: `bash ci/quickstart.sh`.
#
# Installs what is missing (ci/setup.sh), builds dr, starts a throwaway PostgreSQL 15 cluster
# with sample data on a free port, makes an age identity, writes a config with a file://
# repository, and runs: check, backup, list, show latest, restore into a new database (and
# compares row counts), then `verify --sandbox local`, `status`, `prune --dry-run` and
# `daemon --dry-run` (with the example jobs in schedules/) when this build of dr has them. The cluster is
# stopped and its data directory removed at the end, even on failure; the repository, the
# config and the identity stay in the work directory so you can look at them.
#
#   DR_QUICKSTART_DIR   work directory (default /tmp/dr-quickstart; emptied at the start)
#   DR_QUICKSTART_KEEP  1: leave the cluster running at the end (prints how to stop it)
#   DR_PG_BIN_DIR       PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# Safe to run again: every run starts from an empty work directory.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
say() { printf '\n\033[1mquickstart: %s\033[0m\n' "$*" >&2; }
run() {
    printf '+ %s\n' "$*" >&2
    "$@"
}

work=${DR_QUICKSTART_DIR:-/tmp/dr-quickstart}
pg_bin=${DR_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
export DR_PG_BIN_DIR=$pg_bin
case $work in /* | ./*) ;; *) work=$PWD/$work ;; esac
[[ $work != / ]] || { echo "quickstart: refusing to use / as the work directory" >&2; exit 2; }

# --- 1. dependencies and the binary ------------------------------------------------------------
say "installing dependencies (ci/setup.sh)"
bash ci/setup.sh

say "building dr"
cargo build --quiet --bin dr
dr_bin=$root/target/debug/dr
"$dr_bin" --version

# --- 2. a throwaway PostgreSQL 15 -------------------------------------------------------------
# initdb and postgres refuse to run as root: as root, run them as the `postgres` OS user.
if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); else as_pg=(); fi

pgdata=$work/pgdata
stop_cluster() {
    if [[ -f $pgdata/postmaster.pid ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$pgdata" -m fast -w -t 30 >/dev/null 2>&1 ||
            "${as_pg[@]}" "$pg_bin/pg_ctl" stop -D "$pgdata" -m immediate -w -t 10 >/dev/null 2>&1 ||
            true
    fi
}
cleanup() {
    local rc=$?
    if [[ ${DR_QUICKSTART_KEEP:-0} == 1 && $rc == 0 ]]; then
        echo "quickstart: cluster left running on port $port; stop it with:" >&2
        echo "  ${as_pg[*]} $pg_bin/pg_ctl stop -D $pgdata" >&2
        return
    fi
    stop_cluster
    rm -rf "$pgdata"
    if [[ $rc != 0 ]]; then
        echo "quickstart: FAILED (exit $rc); postgres log: $work/postgres.log" >&2
    fi
}

say "starting a throwaway PostgreSQL 15 in $work"
stop_cluster # a cluster left over from an interrupted run
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
[[ $(id -u) != 0 ]] || chown postgres:postgres "$work"
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 \
    --no-locale --no-sync >/dev/null
cat >>"$pgdata/postgresql.conf" <<EOF
# dr quickstart
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
fsync = off
EOF
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if "${as_pg[@]}" "$pg_bin/pg_ctl" start -w -t 60 -D "$pgdata" -l "$work/postgres.log" \
        -o "-p $port" >/dev/null; then
        break
    fi
    [[ $attempt == 5 ]] && { tail -n 20 "$work/postgres.log" >&2; exit 3; }
done
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2

# Trust authentication on loopback: no password anywhere. In real use the password comes from
# PGPASSWORD or ~/.pgpass, never from dr.toml.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGOPTIONS
psql_in() { "$pg_bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$1"; }

say "loading sample data into database app"
psql_in postgres <<<'CREATE DATABASE app'
psql_in app <<'SQL'
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     total numeric(12,2) NOT NULL, items jsonb NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id);
INSERT INTO customers (name, email)
  SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 1000) g;
INSERT INTO orders (customer_id, total, items)
  SELECT 1 + g % 1000, (g % 500) + 0.99,
         jsonb_build_object('sku', 'SKU-' || g % 97, 'qty', 1 + g % 5)
  FROM generate_series(1, 20000) g;
CREATE SCHEMA audit;
CREATE TABLE audit.events (at timestamptz DEFAULT now(), what text);
INSERT INTO audit.events (what) VALUES ('quickstart'), ('sample data loaded');
SQL
counts_sql="SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM orders) || ' ' || (SELECT count(*) FROM audit.events)"
source_counts=$(psql_in app <<<"$counts_sql")
echo "rows (customers orders audit.events): $source_counts" >&2

# --- 3. an identity and a config --------------------------------------------------------------
say "dr keygen: the private identity stays here; the config gets only the public recipient"
recipient=$(run "$dr_bin" keygen --output "$work/identity.txt")
echo "recipient: $recipient" >&2
say "dr keygen --signing: the backup host signs every backup; restore hosts trust its public key"
signer=$(run "$dr_bin" keygen --signing --output "$work/signing.key")
echo "signing key: $signer" >&2

cat >"$work/dr.toml" <<EOF
# Written by ci/quickstart.sh. See docs/CONFIGURATION.md for every key.
[repository]
url = "file://$work/repo"

[encryption]
recipients = ["$recipient"]
# Needed only to restore, verify and show details; a backup-only host leaves it out.
identity_file = "$work/identity.txt"

# This host backs up (key_file) and restores: it trusts its own key. A restore-only host
# lists the backup host's public key instead: trusted = ["$signer"]
[signing]
key_file = "$work/signing.key"

[backup]
pg_bin_dir = "$pg_bin"

[[targets]]
name = "app"
url = "postgres://postgres@127.0.0.1:$port/app"

[retention]
daily = 7
weekly = 4
monthly = 6
EOF
mkdir -p "$work/repo"
export DR_CONFIG=$work/dr.toml
echo "config: $DR_CONFIG" >&2

# --- 4. the commands ---------------------------------------------------------------------------
say "dr check"
run "$dr_bin" check

say "dr backup"
run "$dr_bin" backup

say "dr list"
run "$dr_bin" list

say "dr show latest"
run "$dr_bin" show latest

say "dr restore latest into a new database app_restored"
restore_url="postgres://postgres@127.0.0.1:$port/app_restored"
run "$dr_bin" restore latest --to "$restore_url" --dry-run
run "$dr_bin" restore latest --to "$restore_url" --yes
restored_counts=$(psql_in app_restored <<<"$counts_sql")
echo "rows in app:          $source_counts" >&2
echo "rows in app_restored: $restored_counts" >&2
if [[ $restored_counts != "$source_counts" ]]; then
    echo "quickstart: FAILED: the restored row counts differ" >&2
    exit 1
fi

# Commands that newer builds have; skipped (with a note) where this build lacks them.
has() { "$dr_bin" "$1" --help >/dev/null 2>&1; }
if has verify; then
    say "dr verify latest --sandbox local: restore into a throwaway cluster, compare counts"
    run "$dr_bin" verify latest --sandbox local
    run "$dr_bin" list
else
    say "dr verify is not in this build yet: skipped"
fi
if has status; then
    say "dr status"
    run "$dr_bin" status
fi
if has prune; then
    say "dr prune --dry-run: what [retention] would keep and delete"
    run "$dr_bin" prune --dry-run
fi
if has daemon; then
    say "dr daemon --dry-run: when the example jobs in schedules/ would run"
    mkdir -p "$work/schedules"
    cp schedules/*.toml "$work/schedules/"
    run "$dr_bin" daemon --dry-run
fi

say "done"
cat >&2 <<EOF
Everything worked. Left in $work:
  dr.toml        the config   (try: DR_CONFIG=$work/dr.toml $dr_bin list --json)
  identity.txt   the private age identity (mode 0600)
  repo/          the repository: app/<id>/{pre-data,data-1..N,post-data,globals.sql,details.json}.zst.age + manifest.json
The PostgreSQL cluster is stopped and removed now. Next: README.md "Real use".
EOF
