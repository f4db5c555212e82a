//! SIGINT and SIGTERM, handled the same way by every command: each signal takes the next step
//! of a graceful stop (a warning on stderr, a token cancelled), and the signal after the last
//! step exits 130 at once, without cleanup.
//!
//! One-shot commands have one step (cancel the operation: uploads are aborted, children
//! killed, temp files removed); the daemon has two (start no new job, then cancel the
//! running ones).

use dr_core::daemon::CancellationToken;

/// One-shot commands: the first signal cancels `cancel`, the second exits 130.
pub fn cancel_on_signal(cancel: CancellationToken) {
    spawn(vec![(
        "signal received: stopping, aborting uploads and cleaning up (send again to exit at once)",
        cancel,
    )]);
}

/// The daemon: the first signal cancels `shutdown` (the running jobs finish, no new one
/// starts), the second cancels `cancel` (the running jobs stop), the third exits 130.
pub fn daemon(shutdown: CancellationToken, cancel: CancellationToken) {
    spawn(vec![
        (
            "signal received: finishing the running job(s), starting no new ones (send again to cancel them now)",
            shutdown,
        ),
        (
            "second signal: cancelling the running job(s) (send again to exit at once)",
            cancel,
        ),
    ]);
}

/// Each signal takes the next step; the one after the last exits 130.
fn spawn(steps: Vec<(&'static str, CancellationToken)>) {
    const ORDINAL: [&str; 4] = ["first", "second", "third", "next"];
    let last = ORDINAL[(steps.len()).min(ORDINAL.len() - 1)];
    tokio::spawn(async move {
        for (message, token) in steps {
            wait().await;
            tracing::warn!("{message}");
            token.cancel();
        }
        wait().await;
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
async fn wait() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
