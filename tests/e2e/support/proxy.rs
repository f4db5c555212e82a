//! A flaky network on purpose: a TCP proxy on 127.0.0.1 between dr and a server (SeaweedFS)
//! that, as its rule decides per request, resets the connection after some bytes of the
//! request's or the response's body, or answers 503 SlowDown in the service's place. It reads
//! HTTP/1.1 just enough to know where each body starts and ends (Content-Length or chunked;
//! no body for HEAD, 1xx, 204 and 304), so the connections it leaves alone stay usable.
//!
//! Its own tokio runtime runs it (the harness is blocking); dropping the proxy stops it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener as AsyncListener, TcpStream};

use super::*;

/// One request as the proxy saw it: its method, its target (path and query), its headers
/// (names in lower case).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A GetObject (path-style `/bucket/key`, no listing or sub-resource query).
    pub fn is_object_get(&self) -> bool {
        let (path, query) = self.target.split_once('?').unwrap_or((&self.target, ""));
        self.method == "GET"
            && path.trim_start_matches('/').contains('/')
            && (query.is_empty() || query == "x-id=GetObject")
    }
}

/// Where in a body to cut the connection.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// After this many bytes (a shorter body passes whole).
    After(u64),
    /// After half of it (a body under 2 bytes passes whole).
    Half,
}

impl Cut {
    /// The byte to reset at in a body of `len` bytes, if it is cut at all.
    fn at(self, len: u64) -> Option<u64> {
        let at = match self {
            Cut::After(n) => n,
            Cut::Half => len / 2,
        };
        (at < len && !(matches!(self, Cut::Half) && len < 2)).then_some(at)
    }
}

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Pass,
    /// Forward part of the request's body, then reset both connections.
    ResetRequest(Cut),
    /// Forward part of the response's body, then reset both connections.
    ResetResponse(Cut),
    /// Answer `503 SlowDown` without asking the server.
    SlowDown,
}

type Rule = dyn Fn(&RequestHead) -> Fault + Send + Sync;

/// What the proxy did, for the test's assertions.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    /// Requests with a `Range` header (resumed downloads).
    pub ranged_gets: AtomicU64,
    pub request_resets: AtomicU64,
    pub response_resets: AtomicU64,
    pub slowdowns: AtomicU64,
    /// One line per fault, "RESET GET /bucket/key at 1234 of 5678", "503 PUT /bucket/key",
    /// and per request with a Range, "RANGE GET /bucket/key bytes=1234-".
    pub log: Mutex<Vec<String>>,
}

impl ProxyStats {
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    pub fn faults(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn note(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

pub struct Proxy {
    port: u16,
    stats: Arc<ProxyStats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream_port`, doing to each request what `rule` says.
    pub fn start(
        upstream_port: u16,
        rule: impl Fn(&RequestHead) -> Fault + Send + Sync + 'static,
    ) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stats = Arc::new(ProxyStats::default());
        let rule: Arc<Rule> = Arc::new(rule);
        let st = Arc::clone(&stats);
        runtime.spawn(async move {
            let listener = AsyncListener::from_std(listener).expect("proxy listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (rule, st) = (Arc::clone(&rule), Arc::clone(&st));
                tokio::spawn(async move {
                    // A connection that fails is the client's to notice; nothing to report.
                    let _ = serve(client, upstream_port, &*rule, &st).await;
                });
            }
        });
        Proxy {
            port,
            stats,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:{port}`, for `DR_REPOSITORY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How a body is delimited.
enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

fn framing(headers: &[(String, String)], default: Framing) -> Framing {
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match find("content-length").and_then(|v| v.trim().parse().ok()) {
        Some(n) => Framing::Length(n),
        None => default,
    }
}

/// One client connection, request after request, each over the same server connection.
async fn serve(
    client: TcpStream,
    upstream_port: u16,
    rule: &Rule,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    let mut client = BufReader::new(client);
    let mut upstream = BufReader::new(upstream);
    loop {
        let Some(head) = read_head(&mut client).await? else {
            return Ok(());
        };
        let req = parse_request(&head);
        stats.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(range) = req.header("range") {
            stats.ranged_gets.fetch_add(1, Ordering::SeqCst);
            stats.note(format!("RANGE {} {} {range}", req.method, req.target));
        }
        let fault = rule(&req);
        let body = framing(&req.headers, Framing::Length(0));
        if let Fault::SlowDown = fault {
            copy_body(&mut client, &mut tokio::io::sink(), &body).await?;
            stats.slowdowns.fetch_add(1, Ordering::SeqCst);
            stats.note(format!("503 {} {}", req.method, req.target));
            client
                .get_mut()
                .write_all(&slow_down(req.method == "HEAD"))
                .await?;
            continue;
        }
        upstream.get_mut().write_all(&head).await?;
        match (fault, &body) {
            (Fault::ResetRequest(cut), Framing::Length(len)) if cut.at(*len).is_some() => {
                let at = cut.at(*len).unwrap_or_default();
                copy_exact(&mut client, upstream.get_mut(), at).await?;
                stats.request_resets.fetch_add(1, Ordering::SeqCst);
                stats.note(format!(
                    "RESET {} {} at {at} of {len}",
                    req.method, req.target
                ));
                return reset(client, upstream);
            }
            _ => copy_body(&mut client, upstream.get_mut(), &body).await?,
        }
        loop {
            let Some(head) = read_head(&mut upstream).await? else {
                return Ok(());
            };
            let status = parse_status(&head);
            client.get_mut().write_all(&head).await?;
            if (100..200).contains(&status) {
                continue;
            }
            let (_, headers) = parse_headers(&head);
            let body = if req.method == "HEAD" || status == 204 || status == 304 {
                Framing::Length(0)
            } else {
                framing(&headers, Framing::Close)
            };
            match (fault, &body) {
                (Fault::ResetResponse(cut), Framing::Length(len)) if cut.at(*len).is_some() => {
                    let at = cut.at(*len).unwrap_or_default();
                    copy_exact(&mut upstream, client.get_mut(), at).await?;
                    stats.response_resets.fetch_add(1, Ordering::SeqCst);
                    stats.note(format!(
                        "RESET {} {} at {at} of {len}",
                        req.method, req.target
                    ));
                    return reset(client, upstream);
                }
                (_, Framing::Close) => {
                    tokio::io::copy(&mut upstream, client.get_mut()).await?;
                    return Ok(());
                }
                _ => copy_body(&mut upstream, client.get_mut(), &body).await?,
            }
            break;
        }
    }
}

/// Close both connections with a TCP reset (SO_LINGER 0), as a dropped middlebox would.
fn reset(client: BufReader<TcpStream>, upstream: BufReader<TcpStream>) -> std::io::Result<()> {
    client.get_ref().set_zero_linger()?;
    upstream.get_ref().set_zero_linger()?;
    Ok(())
}

/// The bytes up to and including the blank line; `None` at a clean end of the connection.
async fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if head == b"\r\n" {
            // A stray line between messages (RFC 9112 allows it): not a head.
            head.clear();
            continue;
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > 256 * 1024 {
            return Err(std::io::Error::other("an HTTP head over 256 KiB"));
        }
    }
}

/// The first line's words and the headers, names in lower case.
fn parse_headers(head: &[u8]) -> (Vec<String>, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (first, headers)
}

fn parse_request(head: &[u8]) -> RequestHead {
    let (first, headers) = parse_headers(head);
    RequestHead {
        method: first.first().cloned().unwrap_or_default(),
        target: first.get(1).cloned().unwrap_or_default(),
        headers,
    }
}

fn parse_status(head: &[u8]) -> u16 {
    parse_headers(head)
        .0
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn copy_body<W: tokio::io::AsyncWrite + Unpin>(
    from: &mut BufReader<TcpStream>,
    to: &mut W,
    framing: &Framing,
) -> std::io::Result<()> {
    match framing {
        Framing::Length(n) => copy_exact(from, to, *n).await,
        Framing::Close => tokio::io::copy(from, to).await.map(drop),
        Framing::Chunked => loop {
            // `SIZE[;ext]\r\n`, SIZE bytes, `\r\n`; after the last (0) chunk, trailers up
            // to a blank line.
            let mut line = Vec::new();
            from.read_until(b'\n', &mut line).await?;
            to.write_all(&line).await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size line {text:?}")))?;
            if size == 0 {
                loop {
                    let mut trailer = Vec::new();
                    from.read_until(b'\n', &mut trailer).await?;
                    to.write_all(&trailer).await?;
                    if trailer == b"\r\n" || trailer.is_empty() {
                        return Ok(());
                    }
                }
            }
            copy_exact(from, to, size + 2).await?;
        },
    }
}

async fn copy_exact<W: tokio::io::AsyncWrite + Unpin>(
    from: &mut BufReader<TcpStream>,
    to: &mut W,
    n: u64,
) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut from.take(n), to).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The answer S3 gives a client that asks too fast.
fn slow_down(head_request: bool) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>";
    let body = if head_request { "" } else { body };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: proxy\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
