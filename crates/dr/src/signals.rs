//! SIGINT and SIGTERM, handled the same way by every command: each signal takes the next step
//! of a graceful stop (a warning on stderr, a token cancelled), and the signal after the last
//! step exits 130 at once, without cleanup.
//!
//! One-shot commands have one step (cancel the operation: children stopped, temp files
//! removed, uploads aborted); the daemon has two (start no new job, then cancel the running
//! ones).
//!
//! The signals are held back ([`hold`]) from the first line of `main`, before any work and
//! before any thread, and handed to the steps ([`listen`]) as soon as the runtime exists: a
//! signal in the first instant is a graceful stop (exit 130) like any other, never the
//! default action's death by signal (143).

use std::sync::LazyLock;

use dr_daemon::CancellationToken;
use nix::sys::signal::{SigSet, Signal};

/// The first step's token: one-shot commands' operations, the daemon's "no new job".
static FIRST: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);
/// The daemon's second step: cancel the running jobs.
static SECOND: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

fn set() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGINT);
    s.add(Signal::SIGTERM);
    s
}

/// First line of `main`: SIGINT and SIGTERM stay pending (not delivered, so not fatal) until
/// [`listen`] handles them. Threads started later inherit the mask; children do not (the
/// standard library resets the mask of every process it starts).
pub fn hold() {
    if let Err(e) = set().thread_block() {
        eprintln!("warning: cannot hold back SIGINT/SIGTERM until dr is ready for them: {e}");
    }
}

/// How a command stops.
pub enum Steps {
    /// One step: cancel the operation, saying what stopping does for this command.
    OneShot(&'static str),
    /// The daemon: no new job, then cancel the running ones.
    Daemon,
}

/// Install the handlers (inside the runtime), then let the held-back signals through: one
/// that came in the meantime is handled now.
pub fn listen(steps: Steps) {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => Some((t, i)),
        _ => None,
    };
    let steps = match steps {
        Steps::OneShot(message) => vec![(message, FIRST.clone())],
        Steps::Daemon => vec![
            (
                "signal received: finishing the running job(s), starting no new ones (send again to cancel them now)",
                FIRST.clone(),
            ),
            (
                "second signal: cancelling the running job(s) (send again to exit at once)",
                SECOND.clone(),
            ),
        ],
    };
    spawn(steps, streams);
    // Pending signals are delivered to the handlers installed above before this returns.
    if let Err(e) = set().thread_unblock() {
        eprintln!("warning: cannot let SIGINT/SIGTERM through: {e}");
    }
}

/// The token a one-shot command's operation stops on (the daemon's "no new job").
pub fn first() -> CancellationToken {
    FIRST.clone()
}

/// The daemon's second step: cancel the running jobs.
pub fn second() -> CancellationToken {
    SECOND.clone()
}

/// What stopping a one-shot command does, said when the first signal comes.
pub fn one_shot_message(command: &crate::cli::Command) -> &'static str {
    use crate::cli::Command as C;
    match command {
        C::Restore(_) => "signal received: stopping the restore: pg_restore and its sessions are ended, temp files removed, a database this restore created is dropped (send again to exit at once)",
        C::Verify { .. } => "signal received: stopping the verification: the restore is stopped and the sandbox removed (send again to exit at once)",
        C::Backup { .. } | C::Copy { .. } | C::Prune { .. } | C::Undelete { .. } => "signal received: stopping, aborting uploads and cleaning up (send again to exit at once)",
        _ => "signal received: stopping (send again to exit at once)",
    }
}

type Streams = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// Each signal takes the next step; the one after the last exits 130.
fn spawn(steps: Vec<(&'static str, CancellationToken)>, mut streams: Option<Streams>) {
    const ORDINAL: [&str; 4] = ["first", "second", "third", "next"];
    let last = ORDINAL[(steps.len()).min(ORDINAL.len() - 1)];
    tokio::spawn(async move {
        for (message, token) in steps {
            wait(&mut streams).await;
            tracing::warn!("{message}");
            token.cancel();
        }
        wait(&mut streams).await;
        let message = format!("{last} signal: exiting without cleanup");
        if crate::logging::json_mode() {
            eprintln!("{}", crate::output::event("WARN", &message));
        } else {
            eprintln!("{message}");
        }
        std::process::exit(130);
    });
}

/// The next SIGINT or SIGTERM (Ctrl-C alone where those cannot be installed).
async fn wait(streams: &mut Option<Streams>) {
    match streams {
        Some((t, i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
