//! dr's end-to-end tests, as one test binary (as ripgrep's `tests/tests.rs`): the harness
//! ([`support`]) is compiled and linked once, not once per area.
//!
//! One module per area, named as the files were: run one with
//! `cargo test --test e2e restore::`, one test with `cargo test --test e2e -- --exact
//! restore::NAME`, list them with `cargo test --test e2e -- --list`.
//!
//! Every test runs as a thread of this one process, alongside tests of other areas: nothing
//! may set process-global state (environment, current dir, signal handlers); servers and
//! temp dirs belong to the test that starts them. Tests that load the whole machine (Docker
//! containers, the version matrix, kubernetes-validate, a Prometheus server) hold
//! [`support::one_heavy_test_at_a_time`] for their length, so two of them never run at once.

mod support;

mod all_databases;
mod backup;
mod break_glass;
mod compat;
mod compose;
mod copies;
mod daemon;
mod damaged;
mod deploy;
mod drill;
mod exact_position;
mod exit_codes;
mod faults;
mod flaky;
mod harness;
mod image;
mod matrix;
mod object_lock;
mod part_limits;
mod physical;
mod pitr;
mod pitr_into_db;
mod prometheus;
mod prune;
mod restore;
mod runbooks;
mod runbooks_wal;
mod signals;
mod signing;
mod streaming;
mod verify;
mod wal;
mod wal_fetch;
mod wal_prune;
mod wal_status;
mod wal_stream;
