//! How dr tries again. One [`Policy`] (attempts, backoff doubling up to a cap, an optional
//! deadline) runs an operation until it succeeds, fails for good, or the policy is spent.
//! Whether a failure is worth another try is the caller's classifier, fed by the
//! `is_transient()` of the typed errors of dr-pg, dr-store and dr-sandbox: this crate never
//! guesses from text. Each retry is logged once (what, attempt n of m, the wait); a
//! cancellation token stops the waiting at once.
//!
//! The policies of dr's retry places are named here, in one table ([`S3_REQUEST`] …
//! [`FRESH_BACKUP_ID`]); the daemon's job retries come from its configuration.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Attempts (the first try included), the wait before each retry and how long to keep going.
///
/// The wait before retry `n` (1-based) is `first_backoff * 2^(n-1)`, capped at
/// `max_backoff`: `first_backoff == max_backoff` waits the same each time, zero never waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries in all, the first included; 0 counts as 1.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// From the first try: no retry is started whose wait would end past it.
    pub deadline: Option<Duration>,
    /// The retries are expected (waiting for a server to start): logged at debug, not warn.
    pub polling: bool,
    /// The first retry starts at once and the backoff applies from the second: for a
    /// transfer that broke after progress, where one dropped connection should cost nothing
    /// and only a retry that fails too means the other side is away.
    pub first_at_once: bool,
}

impl Policy {
    /// One try, no retry.
    pub const ONCE: Policy = Policy::new(1, Duration::ZERO, Duration::ZERO);

    /// `attempts` tries, waiting `first_backoff`, doubled up to `max_backoff`, between them.
    pub const fn new(attempts: u32, first_backoff: Duration, max_backoff: Duration) -> Policy {
        Policy {
            attempts,
            first_backoff,
            max_backoff,
            deadline: None,
            polling: false,
            first_at_once: false,
        }
    }

    /// `attempts` tries, `wait` between each two.
    pub const fn fixed(attempts: u32, wait: Duration) -> Policy {
        Policy::new(attempts, wait, wait)
    }

    /// Poll every `wait` until `deadline` (from the first try) has passed: the retries are
    /// expected, so they are logged at debug.
    pub const fn until(deadline: Duration, wait: Duration) -> Policy {
        let mut p = Policy::fixed(u32::MAX, wait).with_deadline(deadline);
        p.polling = true;
        p
    }

    /// The same policy, giving up once `deadline` (from the first try) would be passed.
    pub const fn with_deadline(mut self, deadline: Duration) -> Policy {
        self.deadline = Some(deadline);
        self
    }

    /// The same policy, its first retry at once (see [`Policy::first_at_once`]).
    pub const fn with_first_at_once(mut self) -> Policy {
        self.first_at_once = true;
        self
    }

    /// The wait before retry `n` (the first retry is 1).
    pub fn backoff(&self, n: u32) -> Duration {
        let n = match (self.first_at_once, n) {
            (true, 0 | 1) => return Duration::ZERO,
            (true, n) => n - 1,
            (false, n) => n,
        };
        let doublings = n.saturating_sub(1).min(31);
        self.first_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff.max(self.first_backoff))
    }

    /// Whether retry `n` (1-based) may start after `tried_for` since the first try.
    fn allows(&self, n: u32, tried_for: Duration) -> Option<Duration> {
        if n >= self.attempts.max(1) {
            return None;
        }
        let wait = self.backoff(n);
        match self.deadline {
            Some(d) if tried_for.saturating_add(wait) >= d => None,
            _ => Some(wait),
        }
    }

    /// Run `op` until it succeeds, fails with an error `is_transient` rejects, the attempts
    /// or the deadline are spent, or `cancel` fires; the last error is returned then.
    pub async fn run<T, E, F, Fut, C>(
        &self,
        what: &str,
        cancel: Option<&CancellationToken>,
        is_transient: C,
        mut op: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> bool,
        E: Display,
    {
        let start = Instant::now();
        let mut n = 0;
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            n += 1;
            let cancelled = cancel.is_some_and(CancellationToken::is_cancelled);
            if cancelled || !is_transient(&e) {
                return Err(e);
            }
            let Some(wait) = self.allows(n, start.elapsed()) else {
                return Err(e);
            };
            self.log(what, n, wait, &e);
            if !sleep(wait, cancel).await {
                return Err(e);
            }
        }
    }

    /// [`Policy::run`] for blocking code (no cancellation: the caller is on a blocking thread).
    pub fn run_blocking<T, E, F, C>(&self, what: &str, is_transient: C, mut op: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        C: Fn(&E) -> bool,
        E: Display,
    {
        let start = std::time::Instant::now();
        let mut n = 0;
        loop {
            let e = match op() {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            n += 1;
            if !is_transient(&e) {
                return Err(e);
            }
            let Some(wait) = self.allows(n, start.elapsed()) else {
                return Err(e);
            };
            self.log(what, n, wait, &e);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// One line per retry: what failed, which attempt of how many, how long until the next.
    fn log(&self, what: &str, n: u32, wait: Duration, e: &dyn Display) {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let of = match self.attempts {
            u32::MAX => String::new(),
            m => format!(" of {m}"),
        };
        if self.polling {
            tracing::debug!(
                "{what} failed (attempt {n}{of}): {first}; trying again in {}",
                human(wait)
            );
        } else {
            tracing::warn!(
                "{what} failed (attempt {n}{of}): {first}; trying again in {}",
                human(wait)
            );
        }
    }
}

/// The failures of one operation that cannot be a closure for [`Policy::run`]: a download
/// resumed where it broke, inside a reader's `poll_read`. Each failure asks for the wait
/// before the next try (`None`: the policy is spent); progress in between starts a new count
/// and a new deadline, so a transfer of hours survives any number of short outages.
#[derive(Debug)]
pub struct Retries {
    policy: Policy,
    what: String,
    failures: u32,
    since: Option<std::time::Instant>,
}

impl Retries {
    /// `what` names the operation in the retry log lines, e.g. "reading `app/…/data-1.zst.age`".
    pub fn new(policy: Policy, what: impl Into<String>) -> Retries {
        Retries {
            policy,
            what: what.into(),
            failures: 0,
            since: None,
        }
    }

    /// A try failed with `e` (a transient failure: the caller decides): the wait before the
    /// next one, logged once, or `None` when the attempts or the deadline are spent.
    pub fn failed(&mut self, e: &dyn Display) -> Option<Duration> {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        self.failures += 1;
        let wait = self.policy.allows(self.failures, since.elapsed())?;
        self.policy.log(&self.what, self.failures, wait, e);
        Some(wait)
    }

    /// The operation moved on: the next failure starts a new outage.
    pub fn progressed(&mut self) {
        self.failures = 0;
        self.since = None;
    }

    /// Tries that failed in this outage.
    pub fn attempts(&self) -> u32 {
        self.failures
    }

    /// Since the first failure of this outage (zero when there is none).
    pub fn elapsed(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Every request to S3: the AWS SDK's standard retry carries it out (it adds jitter and knows
/// which answers are transient: 5xx, throttling, timeouts, the network), with these numbers.
pub const S3_REQUEST: Policy = Policy::new(5, ms(500), Duration::from_secs(10));

/// A download from S3 that broke off mid-body (a reset, a stall, a 5xx): asked again with a
/// `Range` from the byte where it stopped — at once, then 1, 2, 4 … 30 s apart, until the
/// store has been away for 5 minutes (20 tries at most); a byte received starts the count
/// again. Each request inside has its own retries ([`S3_REQUEST`]). `DR_READ_RESUME_SECS`
/// sets the deadline.
pub const S3_READ_RESUME: Policy = Policy::new(20, Duration::from_secs(1), Duration::from_secs(30))
    .with_deadline(Duration::from_secs(300))
    .with_first_at_once();

/// A conditional create (`If-None-Match: *`) that AWS answers with 409: a concurrent
/// conditional write to the same key is in progress. Waits 200, 400, 600 ms.
pub const S3_WRITE_CONFLICT: Policy = Policy::new(4, ms(200), ms(600));

/// A directory repository's write that lost a race with a concurrent delete pruning the
/// freshly created parent directory: create it again at once.
pub const DIRECTORY_RACE: Policy = Policy::fixed(4, Duration::ZERO);

/// `dr wal push`: a store request that failed transiently is tried again in the process
/// (4 tries, 1, 2, 4 s apart), then the push exits 3 and PostgreSQL retries the file itself.
pub const WAL_PUSH: Policy = Policy::new(4, Duration::from_secs(1), Duration::from_secs(4));

/// Webhooks and pings: 3 tries, 1 s then 2 s apart; a failure is logged, never fatal.
pub const WEBHOOK: Policy = Policy::new(3, Duration::from_secs(1), Duration::from_secs(2));

/// A run lock held by a live run: looked at again every 2 s until `lock.wait_secs`.
pub const RUN_LOCK_POLL: Policy = Policy::fixed(u32::MAX, Duration::from_secs(2));

/// A throwaway server starting up: connect every 250 ms until its ready timeout.
pub const SANDBOX_CONNECT_EVERY: Duration = ms(250);

/// A backup id (one-second resolution) already taken: wait for the clock, 4 tries 1 s apart.
pub const FRESH_BACKUP_ID: Policy = Policy::fixed(4, Duration::from_secs(1));

/// `dr wal fetch` (PostgreSQL's `restore_command`): a read of the WAL archive that failed
/// for a transient reason is tried 3 times, 1 s then 2 s apart, before the fetch fails (exit
/// 203, which stops recovery): PostgreSQL does not retry a failed restore_command, and
/// "unavailable" must not end recovery over one dropped connection. Each S3 request inside a
/// try has its own retries ([`S3_REQUEST`]); this one also covers a download cut mid-stream.
pub const WAL_FETCH: Policy = Policy::new(3, Duration::from_secs(1), Duration::from_secs(4));

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Wait `wait`, or less when `cancel` fires: `false` when it did.
pub async fn sleep(wait: Duration, cancel: Option<&CancellationToken>) -> bool {
    match cancel {
        Some(c) => tokio::select! {
            () = tokio::time::sleep(wait) => !c.is_cancelled(),
            () = c.cancelled() => false,
        },
        None => {
            tokio::time::sleep(wait).await;
            true
        }
    }
}

fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MS: Duration = Duration::from_millis(1);

    async fn count(policy: Policy, transient: bool, cancel: Option<&CancellationToken>) -> u32 {
        let tries = Cell::new(0);
        let r: Result<(), String> = policy
            .run(
                "test op",
                cancel,
                |_| transient,
                || {
                    tries.set(tries.get() + 1);
                    async { Err("connection reset".to_string()) }
                },
            )
            .await;
        assert_eq!(r, Err("connection reset".to_string()));
        tries.get()
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        assert_eq!(count(Policy::fixed(3, MS), true, None).await, 3);
        assert_eq!(count(Policy::ONCE, true, None).await, 1);
        assert_eq!(count(Policy::fixed(0, MS), true, None).await, 1);
    }

    #[tokio::test]
    async fn stops_on_a_failure_that_is_not_transient() {
        assert_eq!(count(Policy::fixed(5, MS), false, None).await, 1);
    }

    #[tokio::test]
    async fn respects_the_deadline() {
        let started = std::time::Instant::now();
        let tries = count(Policy::until(30 * MS, 10 * MS), true, None).await;
        assert!((2..=3).contains(&tries), "{tries}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(count(Policy::fixed(5, MS), true, Some(&cancel)).await, 1);
        // Cancelled while waiting: the wait ends at once.
        let cancel = CancellationToken::new();
        let later = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(20 * MS).await;
            later.cancel();
        });
        let started = std::time::Instant::now();
        let slow = Policy::fixed(5, Duration::from_secs(30));
        assert_eq!(count(slow, true, Some(&cancel)).await, 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures() {
        let tries = Cell::new(0);
        let r: Result<u32, String> = Policy::fixed(4, MS)
            .run(
                "flaky",
                None,
                |_| true,
                || {
                    tries.set(tries.get() + 1);
                    let n = tries.get();
                    async move {
                        if n < 3 {
                            Err("timed out".to_string())
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn retries_count_one_outage_and_start_again_after_progress() {
        let mut r = Retries::new(Policy::new(3, MS, 4 * MS), "reading `k`");
        assert_eq!(r.failed(&"reset"), Some(MS));
        assert_eq!(r.failed(&"reset"), Some(2 * MS));
        assert_eq!(r.attempts(), 2);
        assert_eq!(
            r.failed(&"reset"),
            None,
            "the third failure spends 3 attempts"
        );
        assert_eq!(r.attempts(), 3);
        r.progressed();
        assert_eq!((r.attempts(), r.elapsed()), (0, Duration::ZERO));
        assert_eq!(
            r.failed(&"reset"),
            Some(MS),
            "a new outage waits from the start"
        );
        // The deadline counts from the outage's first failure.
        let mut r = Retries::new(Policy::fixed(100, 10 * MS).with_deadline(15 * MS), "x");
        assert!(r.failed(&"reset").is_some());
        std::thread::sleep(10 * MS);
        assert_eq!(r.failed(&"reset"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Policy::new(10, Duration::from_millis(200), Duration::from_millis(600));
        let waits: Vec<u128> = (1..=4).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 600, 600]);
        assert_eq!(
            Policy::fixed(3, Duration::from_secs(1)).backoff(3),
            Duration::from_secs(1)
        );
        assert_eq!(Policy::fixed(3, Duration::ZERO).backoff(2), Duration::ZERO);
        let at_once = p.with_first_at_once();
        let waits: Vec<u128> = (1..=5).map(|n| at_once.backoff(n).as_millis()).collect();
        assert_eq!(waits, [0, 200, 400, 600, 600]);
    }

    #[test]
    fn blocking_runs_give_up_and_stop_the_same_way() {
        let tries = Cell::new(0);
        let r: Result<(), String> = Policy::fixed(4, Duration::ZERO).run_blocking(
            "b",
            |_| true,
            || {
                tries.set(tries.get() + 1);
                Err("gone".into())
            },
        );
        assert!(r.is_err());
        assert_eq!(tries.get(), 4);
        tries.set(0);
        let _ = Policy::fixed(4, Duration::ZERO).run_blocking(
            "b",
            |_| false,
            || {
                tries.set(tries.get() + 1);
                Err::<(), String>("gone".into())
            },
        );
        assert_eq!(tries.get(), 1);
    }
}
