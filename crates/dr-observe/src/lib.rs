//! What dr tells the world about its runs: the [`report`] around every backup, verify and
//! prune (pings → the operation, tried again on transient failures → metrics → webhook),
//! the Prometheus [`metrics`] (kept in memory, a node-exporter textfile, and the `/metrics`
//! HTTP server of `dr daemon`), and [`notify`], which delivers webhooks and pings.
//!
//! dr-observe wraps the operations of dr-core and never changes their outcome: a webhook or
//! a metrics file that cannot be written is logged, and the exit code is the operation's.
//!
//! ```no_run
//! # async fn demo(ctx: dr_core::Context) -> Result<(), dr_core::Error> {
//! let reporter = dr_observe::report::Reporter::from_config(&ctx.config)?;
//! # Ok(()) }
//! ```

pub mod metrics;
pub mod notify;
pub mod report;
