//! Downloads that survive a broken connection. [`ResumingReader`] reads one object through a
//! [`RangeSource`]; when the body breaks off (a reset, a stall, a 5xx on the way) it asks
//! again from the byte where it stopped, under the read policy
//! ([`dr_retry::S3_READ_RESUME`]), and the consumer (SHA-256, age, zstd, pg_restore) reads on
//! over the joined stream without noticing. Every request after the first is conditional on
//! the first answer's ETag (`If-Match`), and its ETag, size and first byte are checked too: an
//! object replaced between two requests is refused ([`StoreError::Changed`]), never spliced.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use dr_retry::{Policy, Retries};
use tokio::io::{AsyncRead, ReadBuf};

use crate::StoreError;

/// Overrides the deadline of [`dr_retry::S3_READ_RESUME`], in seconds: how long a download
/// that broke off keeps being resumed while the store is away (0: never resumed).
pub const READ_RESUME_ENV: &str = "DR_READ_RESUME_SECS";

/// The read policy, with the deadline `DR_READ_RESUME_SECS` sets (`get` is the environment).
pub(crate) fn read_policy(get: impl Fn(&str) -> Option<String>) -> Result<Policy, StoreError> {
    let policy = dr_retry::S3_READ_RESUME;
    let Some(text) = get(READ_RESUME_ENV).filter(|v| !v.trim().is_empty()) else {
        return Ok(policy);
    };
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(policy.with_deadline(std::time::Duration::from_secs(secs))),
        Err(_) => Err(StoreError::InvalidOption {
            key: READ_RESUME_ENV.to_owned(),
            reason: format!("`{text}` is not a number of seconds"),
            hint: format!("set {READ_RESUME_ENV} to e.g. 600, or unset it for the default of 300"),
        }),
    }
}

/// A streaming body.
pub(crate) type Body = Box<dyn AsyncRead + Send + Unpin>;

/// A request for the rest of an object, under way.
pub(crate) type Opening = Pin<Box<dyn Future<Output = Result<Opened, StoreError>> + Send>>;

/// One answer of a GET: where its body starts in the object, the object's size and ETag.
pub(crate) struct Opened {
    pub(crate) start: u64,
    pub(crate) total: u64,
    pub(crate) etag: Option<String>,
    pub(crate) body: Body,
}

/// Where a [`ResumingReader`] gets its bytes: one object of one backend.
pub(crate) trait RangeSource: Send + Sync + 'static {
    /// The object from `offset` to its end; with `etag`, only while the object still has it
    /// (`If-Match`: a changed object answers [`StoreError::Changed`]).
    fn open(&self, offset: u64, etag: Option<String>) -> Opening;
}

enum State {
    Reading(Body),
    Waiting(Pin<Box<tokio::time::Sleep>>),
    Opening(Opening),
    Done,
    /// The error was returned once; later reads get its message again.
    Failed(String),
}

/// One object read from start to end, resumed where it broke as often as the policy allows.
pub(crate) struct ResumingReader {
    source: Arc<dyn RangeSource>,
    key: String,
    location: String,
    size: u64,
    /// From the first answer: every later request must be for the same object.
    etag: Option<String>,
    /// Bytes passed on to the consumer.
    pos: u64,
    state: State,
    retries: Retries,
}

impl ResumingReader {
    /// The first GET (a missing object is [`StoreError::NotFound`], as the source says; it is
    /// not resumed: the source's own request retries have run).
    pub(crate) async fn open(
        source: Arc<dyn RangeSource>,
        key: &str,
        location: String,
        policy: Policy,
    ) -> Result<ResumingReader, StoreError> {
        let first = source.open(0, None).await?;
        let mut reader = ResumingReader {
            source,
            key: key.to_owned(),
            location,
            size: first.total,
            etag: first.etag,
            pos: 0,
            state: State::Done,
            retries: Retries::new(policy, format!("reading `{key}`")),
        };
        if first.start != 0 {
            return Err(reader.broken(format!(
                "asked for the whole object, the service answered from byte {}",
                first.start
            )));
        }
        reader.state = State::Reading(first.body);
        Ok(reader)
    }

    /// The object's size, from the first answer.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The download broke off (`cause`): wait and ask again, or give up for good.
    fn broke(&mut self, cause: String) -> io::Result<()> {
        match self.retries.failed(&cause) {
            Some(wait) => {
                self.state = State::Waiting(Box::pin(tokio::time::sleep(wait)));
                Ok(())
            }
            None => Err(self.fail(self.broken(cause))),
        }
    }

    /// The error when the policy is spent (or the service cannot resume at all).
    fn broken(&self, cause: String) -> StoreError {
        StoreError::ReadBroken {
            key: self.key.clone(),
            location: self.location.clone(),
            offset: self.pos,
            size: self.size,
            attempts: self.retries.attempts().max(1),
            secs: self.retries.elapsed().as_secs(),
            cause,
        }
    }

    fn changed(&self, detail: String) -> StoreError {
        StoreError::Changed {
            key: self.key.clone(),
            location: self.location.clone(),
            offset: self.pos,
            detail,
        }
    }

    /// Remember that the read failed; the error for the consumer.
    fn fail(&mut self, e: StoreError) -> io::Error {
        self.state = State::Failed(e.to_string());
        io::Error::other(e)
    }

    /// A resumed answer must be the rest of the same object.
    fn check(&self, opened: &Opened) -> Result<(), StoreError> {
        if let (Some(was), Some(now)) = (&self.etag, &opened.etag) {
            if was != now {
                return Err(self.changed(format!("its ETag was {was} and is now {now}")));
            }
        }
        if opened.total != self.size {
            return Err(self.changed(format!(
                "it was {} bytes and is now {}",
                self.size, opened.total
            )));
        }
        if opened.start != self.pos {
            return Err(self.broken(format!(
                "asked for the bytes from {}, the service answered from byte {}",
                self.pos, opened.start
            )));
        }
        Ok(())
    }
}

impl AsyncRead for ResumingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Reading(body) => {
                    let before = buf.filled().len();
                    match ready!(Pin::new(body).poll_read(cx, buf)) {
                        Ok(()) => {
                            let n = (buf.filled().len() - before) as u64;
                            if n > 0 {
                                if this.pos + n > this.size {
                                    let e = this.broken(format!(
                                        "the service sent more than the object's {} bytes",
                                        this.size
                                    ));
                                    return Poll::Ready(Err(this.fail(e)));
                                }
                                this.pos += n;
                                this.retries.progressed();
                                return Poll::Ready(Ok(()));
                            }
                            if this.pos == this.size {
                                this.state = State::Done;
                                return Poll::Ready(Ok(()));
                            }
                            // The connection closed without an error, short of the end.
                            let cause =
                                format!("the answer ended at byte {} of {}", this.pos, this.size);
                            if let Err(e) = this.broke(cause) {
                                return Poll::Ready(Err(e));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            return Poll::Ready(Err(e))
                        }
                        // Everything arrived; only the connection's end went wrong.
                        Err(_) if this.pos == this.size => this.state = State::Done,
                        Err(e) => {
                            if let Err(e) = this.broke(error_chain(&e)) {
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    tracing::debug!(key = %this.key, offset = this.pos, "resuming the download");
                    this.state = State::Opening(this.source.open(this.pos, this.etag.clone()));
                }
                State::Opening(request) => match ready!(request.as_mut().poll(cx)) {
                    Ok(opened) => {
                        if let Err(e) = this.check(&opened) {
                            return Poll::Ready(Err(this.fail(e)));
                        }
                        this.state = State::Reading(opened.body);
                    }
                    Err(e) if e.is_transient() => {
                        if let Err(e) = this.broke(e.to_string()) {
                            return Poll::Ready(Err(e));
                        }
                    }
                    Err(e) => return Poll::Ready(Err(this.fail(e))),
                },
                State::Done => return Poll::Ready(Ok(())),
                State::Failed(message) => {
                    return Poll::Ready(Err(io::Error::other(message.clone())))
                }
            }
        }
    }
}

/// `outer: inner: innermost` of an I/O error from a body (hyper's error is inside).
fn error_chain(e: &io::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = std::error::Error::source(e);
    while let Some(c) = next {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// What the fake answers to one request.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        /// The rest of the object.
        Whole,
        /// `n` bytes, then a connection reset.
        ResetAfter(usize),
        /// `n` bytes, then a clean end (short of the object's).
        EndAfter(usize),
        /// 503 SlowDown before any body.
        SlowDown,
    }

    /// One object that answers each request as scripted (the last answer repeats), records
    /// (offset, If-Match) of each, and can be replaced; `honours_if_match` as S3 does, or
    /// ignoring it as a careless S3-compatible service might.
    struct Fake {
        data: Mutex<(Vec<u8>, String)>,
        script: Vec<Answer>,
        honours_if_match: bool,
        requests: Mutex<Vec<(u64, Option<String>)>>,
    }

    impl Fake {
        fn new(data: Vec<u8>, script: &[Answer]) -> Arc<Fake> {
            Arc::new(Fake {
                data: Mutex::new((data, "\"v1\"".into())),
                script: script.to_vec(),
                honours_if_match: true,
                requests: Mutex::new(Vec::new()),
            })
        }

        fn replace(&self, data: Vec<u8>, etag: &str) {
            *self.data.lock().expect("lock") = (data, etag.into());
        }

        fn requests(&self) -> Vec<(u64, Option<String>)> {
            self.requests.lock().expect("lock").clone()
        }
    }

    impl RangeSource for Fake {
        fn open(&self, offset: u64, if_match: Option<String>) -> Opening {
            let n = {
                let mut r = self.requests.lock().expect("lock");
                r.push((offset, if_match.clone()));
                r.len() - 1
            };
            let answer = self.script[n.min(self.script.len() - 1)];
            let (data, etag) = self.data.lock().expect("lock").clone();
            let stale = if_match.as_ref().is_some_and(|m| *m != etag);
            let honours = self.honours_if_match;
            Box::pin(async move {
                if stale && honours {
                    return Err(StoreError::Changed {
                        key: "k".into(),
                        location: "fake".into(),
                        offset,
                        detail: "412 Precondition Failed".into(),
                    });
                }
                let start = usize::try_from(offset).expect("offset");
                let rest = data.get(start..).unwrap_or_default().to_vec();
                let (len, reset) = match answer {
                    Answer::Whole => (rest.len(), false),
                    Answer::ResetAfter(k) => (k.min(rest.len()), true),
                    Answer::EndAfter(k) => (k.min(rest.len()), false),
                    Answer::SlowDown => {
                        return Err(StoreError::S3 {
                            operation: "GetObject",
                            target: "s3://b/k".into(),
                            code: Some("SlowDown".into()),
                            status: Some(503),
                            message: "SlowDown: Please reduce your request rate.".into(),
                            hint: None,
                        })
                    }
                };
                Ok(Opened {
                    start: offset,
                    total: data.len() as u64,
                    etag: Some(etag),
                    body: Box::new(FakeBody {
                        data: rest[..len].to_vec(),
                        pos: 0,
                        reset,
                    }),
                })
            })
        }
    }

    /// Hands out at most 1000 bytes a read, then ends or fails with a reset.
    struct FakeBody {
        data: Vec<u8>,
        pos: usize,
        reset: bool,
    }

    impl AsyncRead for FakeBody {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let left = self.data.len() - self.pos;
            if left == 0 {
                return Poll::Ready(if self.reset {
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "connection reset by peer",
                    ))
                } else {
                    Ok(())
                });
            }
            let n = left.min(1000).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.data[from..from + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    const QUICK: Policy = Policy::fixed(3, Duration::ZERO);

    async fn read_all(fake: Arc<Fake>, policy: Policy) -> Result<Vec<u8>, io::Error> {
        let mut r = ResumingReader::open(fake, "app/1/data-1.zst.age", "s3://b/dr".into(), policy)
            .await
            .map_err(io::Error::other)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn store_error(e: &io::Error) -> &StoreError {
        e.get_ref()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .unwrap_or_else(|| panic!("not a StoreError: {e}"))
    }

    #[tokio::test]
    async fn the_joined_bytes_are_exact_and_each_request_starts_where_the_last_broke() {
        let data = object(100_000);
        let fake = Fake::new(
            data.clone(),
            &[
                Answer::ResetAfter(10_000),
                Answer::ResetAfter(25_000),
                Answer::EndAfter(5),
                Answer::SlowDown,
                Answer::Whole,
            ],
        );
        let got = read_all(Arc::clone(&fake), QUICK).await.expect("read");
        assert!(got == data, "the joined bytes differ");
        let etag = Some("\"v1\"".to_string());
        assert_eq!(
            fake.requests(),
            [
                (0, None),
                (10_000, etag.clone()),
                (35_000, etag.clone()),
                (35_005, etag.clone()),
                (35_005, etag),
            ]
        );
    }

    #[tokio::test]
    async fn attempts_are_bounded_by_the_policy_and_the_error_says_what_and_where() {
        let fake = Fake::new(
            object(5000),
            &[Answer::ResetAfter(1200), Answer::ResetAfter(0)],
        );
        let e = read_all(Arc::clone(&fake), QUICK)
            .await
            .expect_err("gives up");
        // The first GET broke after 1200 bytes, then two more tries without a byte: three
        // failures in a row spend the policy.
        assert_eq!(fake.requests().len(), 3);
        match store_error(&e) {
            StoreError::ReadBroken {
                key,
                offset,
                size,
                attempts,
                cause,
                ..
            } => {
                assert_eq!(
                    (key.as_str(), *offset, *size),
                    ("app/1/data-1.zst.age", 1200, 5000)
                );
                assert_eq!(*attempts, 3);
                assert!(cause.contains("connection reset"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
        let text = store_error(&e).to_string();
        assert!(
            text.contains("s3://b/dr") && text.contains("3 attempts"),
            "{text}"
        );
        assert!(store_error(&e).is_transient());
        assert!(store_error(&e)
            .hint()
            .is_some_and(|h| h.contains("DR_READ_RESUME_SECS")));
        // Reading on after the failure fails again, never returns a clean end.
        let fake = Fake::new(object(10), &[Answer::ResetAfter(0)]);
        let mut r = ResumingReader::open(fake, "k", "fake".into(), Policy::ONCE)
            .await
            .expect("open");
        let mut buf = [0u8; 4];
        assert!(r.read(&mut buf).await.is_err());
        assert!(r.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn the_deadline_ends_an_outage_and_progress_starts_a_new_one() {
        let started = std::time::Instant::now();
        let fake = Fake::new(object(3000), &[Answer::ResetAfter(0)]);
        let policy = Policy::fixed(u32::MAX, Duration::from_millis(10))
            .with_deadline(Duration::from_millis(60));
        let e = read_all(Arc::clone(&fake), policy)
            .await
            .expect_err("gives up");
        assert!(matches!(store_error(&e), StoreError::ReadBroken { .. }));
        // 10 ms apart until 60 ms: about 6 tries, fewer on a loaded machine, never unbounded.
        assert!(
            (2..=8).contains(&fake.requests().len()),
            "{:?}",
            fake.requests()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Ten breaks, each after some bytes: more than the policy's 3 attempts in all, but
        // never 3 in a row without progress.
        let data = object(50_000);
        let fake = Fake::new(data.clone(), &[Answer::ResetAfter(4000)]);
        assert!(read_all(fake, QUICK).await.expect("read") == data);
    }

    /// A reader of `fake`'s object under [`QUICK`].
    async fn open_quick(fake: &Arc<Fake>) -> ResumingReader {
        ResumingReader::open(
            Arc::clone(fake) as Arc<dyn RangeSource>,
            "k",
            "fake".into(),
            QUICK,
        )
        .await
        .expect("open")
    }

    #[tokio::test]
    async fn a_changed_object_is_refused_never_spliced() {
        // S3 answers the If-Match of the resumed request with 412.
        let fake = Fake::new(object(8000), &[Answer::ResetAfter(3000), Answer::Whole]);
        let mut r = open_quick(&fake).await;
        let mut first = vec![0u8; 3000];
        r.read_exact(&mut first).await.expect("first part");
        fake.replace(object(8000).into_iter().rev().collect(), "\"v2\"");
        let e = r.read_to_end(&mut Vec::new()).await.expect_err("refused");
        assert!(matches!(store_error(&e), StoreError::Changed { .. }), "{e}");
        assert_eq!(
            fake.requests().len(),
            2,
            "a changed object is not asked again"
        );

        // A service that ignores If-Match: the new ETag gives it away.
        let mut careless = Fake::new(object(8000), &[Answer::ResetAfter(3000), Answer::Whole]);
        Arc::get_mut(&mut careless)
            .expect("one owner")
            .honours_if_match = false;
        let mut r = open_quick(&careless).await;
        r.read_exact(&mut first).await.expect("first part");
        careless.replace(object(8000).into_iter().rev().collect(), "\"v2\"");
        let e = r.read_to_end(&mut Vec::new()).await.expect_err("refused");
        match store_error(&e) {
            StoreError::Changed { offset, detail, .. } => {
                assert_eq!(*offset, 3000);
                assert!(
                    detail.contains("\"v1\"") && detail.contains("\"v2\""),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!store_error(&e).is_transient());

        // Same ETag, another size (a service without ETags would look like this).
        let fake = Fake::new(object(8000), &[Answer::ResetAfter(3000), Answer::Whole]);
        let mut r = open_quick(&fake).await;
        r.read_exact(&mut first).await.expect("first part");
        fake.replace(object(9000), "\"v1\"");
        let e = r.read_to_end(&mut Vec::new()).await.expect_err("refused");
        assert!(matches!(store_error(&e), StoreError::Changed { .. }), "{e}");
    }

    #[test]
    fn the_deadline_comes_from_the_environment() {
        let env = |v: &'static str| move |k: &str| (k == READ_RESUME_ENV).then(|| v.to_string());
        assert_eq!(
            read_policy(|_| None).expect("default"),
            dr_retry::S3_READ_RESUME
        );
        assert_eq!(
            read_policy(env("")).expect("empty"),
            dr_retry::S3_READ_RESUME
        );
        assert_eq!(
            read_policy(env(" 7 ")).expect("7").deadline,
            Some(Duration::from_secs(7))
        );
        let e = read_policy(env("5m")).expect_err("not a number");
        assert!(e.to_string().contains(READ_RESUME_ENV), "{e}");
    }

    #[tokio::test]
    async fn a_failure_that_is_not_transient_stops_at_once() {
        struct Gone;
        impl RangeSource for Gone {
            fn open(&self, offset: u64, _etag: Option<String>) -> Opening {
                Box::pin(async move {
                    if offset == 0 {
                        Ok(Opened {
                            start: 0,
                            total: 10,
                            etag: None,
                            body: Box::new(FakeBody {
                                data: vec![7; 4],
                                pos: 0,
                                reset: true,
                            }),
                        })
                    } else {
                        Err(StoreError::NotFound { key: "k".into() })
                    }
                })
            }
        }
        let mut r = ResumingReader::open(Arc::new(Gone), "k", "fake".into(), QUICK)
            .await
            .expect("open");
        let e = r.read_to_end(&mut Vec::new()).await.expect_err("gone");
        assert!(store_error(&e).is_not_found(), "{e}");
    }
}
