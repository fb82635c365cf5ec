//! A fault-injecting TCP proxy for the network-fault tests: it sits between mailvault and a
//! real server (Dovecot, versitygw, the apiserver) and breaks the connection in the ways a
//! network or a server does.
//!
//! `client -> FaultProxy (plan: per connection, or per HTTP request) -> real server`
//!
//! Two kinds of plans:
//! - [`FaultProxy::tcp`]: bytes are piped both ways (TLS passes through untouched); the plan
//!   picks, per connection, whether to reset it or stall it after the server has sent some bytes.
//! - [`FaultProxy::http`]: requests from the client are read one by one (HTTP/1.1, bodies by
//!   `Content-Length` or chunked); the plan may answer one itself (a 500, a `503 SlowDown`),
//!   reset the connection half-way through its body, or forward it and lose the answer.
//!
//! [`FaultProxy::outage`] plays a server restart on either kind: every open connection is reset
//! and new ones are reset at once for a while.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// What happens to one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFault {
    /// Piped both ways.
    Pass,
    /// Both sides reset (RST) once the server has sent this many bytes to the client.
    ResetAfter(u64),
    /// Nothing more forwarded either way once the server has sent this many bytes; the
    /// connection stays open (a server that stops answering).
    StallAfter(u64),
    /// The server's bytes passed at this many bytes a second (a slow link), in pieces of at
    /// most 1 KiB.
    Throttle(u64),
}

/// An HTTP server's answer made up by a test: given the request's head (as text) and body,
/// the raw bytes to send back instead of forwarding it (a server that lies about what it did).
pub type Diverter = std::sync::Arc<
    dyn Fn(String, Vec<u8>) -> std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send>>
        + Send
        + Sync,
>;

/// What happens to one HTTP request.
#[derive(Clone)]
pub enum HttpFault {
    /// Read, not forwarded; answered with this status and S3 error code, then closed.
    Answer {
        /// HTTP status (500, 503).
        status: u16,
        /// S3 error code (`InternalError`, `SlowDown`).
        code: &'static str,
    },
    /// Read, not forwarded; answered with this status, S3 error code and message, then closed
    /// (a refusal the server gives in its own words).
    Refuse {
        /// HTTP status (400).
        status: u16,
        /// S3 error code (`InvalidArgument`).
        code: &'static str,
        /// The error's message.
        message: &'static str,
    },
    /// The head and half of the body forwarded, then both sides reset.
    ResetMidBody,
    /// Forwarded whole; the server's answer is read and thrown away and the client's
    /// connection reset: the server did it, the client cannot know.
    LoseAnswer,
    /// Forwarded whole; the head of the server's answer (status line and headers, up to the
    /// blank line, as text) is rewritten by this function, the body passed as it is.
    RewriteAnswerHead(fn(&str) -> String),
    /// Forwarded whole; the head of the answer and this many bytes of its body are passed,
    /// then nothing more (the connection stays open): a server that stops mid-answer.
    StallAnswerAfterHead(usize),
    /// Forwarded whole; not a byte of the answer is passed (the connection stays open): a
    /// server that never answers a request it may have carried out.
    StallAnswer,
    /// Not forwarded: answered with what the [`Diverter`] makes of it.
    Divert(Diverter),
}

impl std::fmt::Debug for HttpFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer { status, code } => write!(f, "Answer({status} {code})"),
            Self::Refuse {
                status,
                code,
                message,
            } => write!(f, "Refuse({status} {code}: {message})"),
            Self::ResetMidBody => f.write_str("ResetMidBody"),
            Self::LoseAnswer => f.write_str("LoseAnswer"),
            Self::RewriteAnswerHead(_) => f.write_str("RewriteAnswerHead"),
            Self::StallAnswerAfterHead(n) => write!(f, "StallAnswerAfterHead({n})"),
            Self::StallAnswer => f.write_str("StallAnswer"),
            Self::Divert(_) => f.write_str("Divert"),
        }
    }
}

/// What the answer loop does with the answer to the request in flight.
#[derive(Clone, Copy)]
enum AnswerMode {
    Pass,
    Rewrite(fn(&str) -> String),
    StallAfterHead(usize),
    Silent,
}

/// A request as the HTTP plan sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `PUT`, `GET`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Body length in bytes.
    pub body_len: usize,
    /// The request line and headers, as text.
    pub head: String,
}

impl Request {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }
}

/// The value of header `name` (case-insensitive) in an HTTP head.
pub fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// Whether the request names no sub-resource: a plain object PUT or GET, not
    /// `?legal-hold`, `?retention`, `?versions` (aws-sdk-s3 adds `x-id=PutObject` and the like,
    /// which S3 ignores).
    pub fn plain(&self) -> bool {
        self.target
            .split_once('?')
            .is_none_or(|(_, query)| query.split('&').all(|p| p.starts_with("x-id=")))
    }
}

type TcpPlan = Box<dyn Fn(usize) -> TcpFault + Send + Sync>;
type HttpPlan = Box<dyn FnMut(&Request) -> Option<HttpFault> + Send>;

enum Plan {
    Tcp(TcpPlan),
    Http(Mutex<HttpPlan>),
}

struct Shared {
    upstream: String,
    plan: Plan,
    injected: AtomicUsize,
    connections: AtomicUsize,
    refuse_until: Mutex<Option<Instant>>,
    /// Bumped on every outage (and when the proxy is dropped): open connections reset.
    generation: watch::Sender<u64>,
}

/// A running proxy; stops (resetting its connections) when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`, or a URL whose scheme is dropped) that pipes bytes,
    /// with `plan(n)` deciding the fate of the `n`-th connection (from 0).
    pub async fn tcp(
        upstream: &str,
        plan: impl Fn(usize) -> TcpFault + Send + Sync + 'static,
    ) -> Self {
        Self::start(upstream, Plan::Tcp(Box::new(plan))).await
    }

    /// A proxy to an HTTP `upstream` with `plan` deciding, per request, whether and how to
    /// break it (`None`: forward).
    pub async fn http(
        upstream: &str,
        plan: impl FnMut(&Request) -> Option<HttpFault> + Send + 'static,
    ) -> Self {
        Self::start(upstream, Plan::Http(Mutex::new(Box::new(plan)))).await
    }

    async fn start(upstream: &str, plan: Plan) -> Self {
        let upstream = upstream
            .split_once("://")
            .map_or(upstream, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            plan,
            injected: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            refuse_until: Mutex::new(None),
            generation: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self {
            port,
            shared,
            accept,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Faults injected so far (connections reset or stalled, requests broken).
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// A server restart: every open connection is reset now, and every new one for `down`.
    pub fn outage(&self, down: Duration) {
        *self
            .shared
            .refuse_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + down);
        self.shared.generation.send_modify(|g| *g += 1);
        self.shared.injected.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

/// Closes with RST rather than FIN: what a crashed server or a broken path looks like.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        let down = shared
            .refuse_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until);
        if down {
            reset(&client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut restarts = shared.generation.subscribe();
            let Ok(server) = TcpStream::connect(&shared.upstream).await else {
                reset(&client);
                return;
            };
            let _ = server.set_nodelay(true);
            let (mut client, mut server) = (client, server);
            let outcome = tokio::select! {
                outcome = serve(&shared, n, &mut client, &mut server) => outcome,
                _ = restarts.changed() => End::Reset,
            };
            if outcome == End::Reset {
                reset(&client);
                reset(&server);
            }
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
}

async fn serve(shared: &Shared, n: usize, client: &mut TcpStream, server: &mut TcpStream) -> End {
    match &shared.plan {
        Plan::Tcp(plan) => {
            let fault = plan(n);
            pipe_tcp(shared, fault, client, server).await
        }
        Plan::Http(plan) => pipe_http(shared, plan, client, server).await,
    }
}

async fn pipe_tcp(
    shared: &Shared,
    fault: TcpFault,
    client: &mut TcpStream,
    server: &mut TcpStream,
) -> End {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        End::Closed
    };
    let answers = async {
        let limit = match fault {
            TcpFault::Pass | TcpFault::Throttle(_) => u64::MAX,
            TcpFault::ResetAfter(n) | TcpFault::StallAfter(n) => n,
        };
        let (piece, rate) = match fault {
            TcpFault::Throttle(rate) => (1024, rate.max(1)),
            _ => (16 * 1024, 0),
        };
        let mut sent = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let want = usize::try_from(limit - sent)
                .unwrap_or(usize::MAX)
                .min(piece);
            if want == 0 {
                shared.injected.fetch_add(1, Ordering::SeqCst);
                if fault == TcpFault::StallAfter(limit) {
                    // Keep both sockets open and silent until the client gives up.
                    let mut sink = [0u8; 4096];
                    while drain_while_open(&mut server_read, &mut sink).await {}
                    return End::Closed;
                }
                return End::Reset;
            }
            match server_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(k) => {
                    if client_write.write_all(&buf[..k]).await.is_err() {
                        return End::Closed;
                    }
                    sent += k as u64;
                    if let Some(micros) = (k as u64 * 1_000_000).checked_div(rate) {
                        tokio::time::sleep(Duration::from_micros(micros)).await;
                    }
                }
            }
        }
    };
    tokio::select! {
        end = requests => end,
        end = answers => end,
    }
}

/// Reads and drops what the server still sends while the proxy stalls (so the server never
/// blocks on a full socket); false once it closes.
async fn drain_while_open(read: &mut tokio::net::tcp::ReadHalf<'_>, sink: &mut [u8]) -> bool {
    matches!(read.read(sink).await, Ok(k) if k > 0)
}

/// The HTTP side: requests read one at a time from the client; answers piped back raw (HTTP/1.1
/// clients send the next request on a connection only after the whole previous answer, so
/// every byte the server sends after a request is forwarded belongs to that request's answer).
async fn pipe_http(
    shared: &Shared,
    plan: &Mutex<HttpPlan>,
    client: &mut TcpStream,
    server: &mut TcpStream,
) -> End {
    let (mut client_read, client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    // Both loops write to the client: the answers, and an answer the proxy makes up.
    let client_write = tokio::sync::Mutex::new(client_write);
    let swallow = AtomicBool::new(false);
    let answer_seen = Notify::new();
    let answer_mode = Mutex::new(AnswerMode::Pass);
    let requests = async {
        let mut pending = Vec::new();
        loop {
            let Some((head, body, request)) = read_request(&mut client_read, &mut pending).await
            else {
                return End::Closed;
            };
            let fault = (plan.lock().unwrap_or_else(PoisonError::into_inner))(&request);
            // Faults that forward the request and act on its answer, and the diverted one.
            let mode = match &fault {
                None => Some(AnswerMode::Pass),
                Some(HttpFault::RewriteAnswerHead(f)) => Some(AnswerMode::Rewrite(*f)),
                Some(HttpFault::StallAnswerAfterHead(n)) => Some(AnswerMode::StallAfterHead(*n)),
                Some(HttpFault::StallAnswer) => Some(AnswerMode::Silent),
                Some(HttpFault::Divert(divert)) => {
                    shared.injected.fetch_add(1, Ordering::SeqCst);
                    let answer = divert(String::from_utf8_lossy(&head).into_owned(), body).await;
                    if client_write.lock().await.write_all(&answer).await.is_err() {
                        return End::Closed;
                    }
                    continue;
                }
                Some(_) => None,
            };
            if let Some(mode) = mode {
                if fault.is_some() {
                    shared.injected.fetch_add(1, Ordering::SeqCst);
                }
                *answer_mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
                if server_write.write_all(&head).await.is_err()
                    || server_write.write_all(&body).await.is_err()
                {
                    return End::Closed;
                }
                continue;
            }
            let Some(fault) = fault else {
                return End::Closed;
            };
            shared.injected.fetch_add(1, Ordering::SeqCst);
            return match fault {
                HttpFault::Answer { status, code } => {
                    let mut w = client_write.lock().await;
                    error_answer(&mut *w, status, code, "injected by the fault proxy").await;
                    End::Closed
                }
                HttpFault::Refuse {
                    status,
                    code,
                    message,
                } => {
                    let mut w = client_write.lock().await;
                    error_answer(&mut *w, status, code, message).await;
                    End::Closed
                }
                HttpFault::ResetMidBody => {
                    let _ = server_write.write_all(&head).await;
                    let _ = server_write.write_all(&body[..body.len() / 2]).await;
                    End::Reset
                }
                HttpFault::LoseAnswer => {
                    swallow.store(true, Ordering::SeqCst);
                    let notified = answer_seen.notified();
                    if server_write.write_all(&head).await.is_ok()
                        && server_write.write_all(&body).await.is_ok()
                    {
                        // The server has done the request once its answer starts.
                        let _ = tokio::time::timeout(Duration::from_secs(60), notified).await;
                    }
                    End::Reset
                }
                HttpFault::RewriteAnswerHead(_)
                | HttpFault::StallAnswerAfterHead(_)
                | HttpFault::StallAnswer
                | HttpFault::Divert(_) => End::Closed,
            };
        }
    };
    let answers = async {
        let mut buf = vec![0u8; 16 * 1024];
        // The head of an answer being rewritten, or the bytes left to pass before a stall.
        let mut held: Vec<u8> = Vec::new();
        loop {
            let mode = *answer_mode.lock().unwrap_or_else(PoisonError::into_inner);
            if let AnswerMode::Rewrite(_) | AnswerMode::StallAfterHead(_) = mode
                && let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n")
            {
                let rest = held.split_off(end + 4);
                let head = String::from_utf8_lossy(&held).into_owned();
                held.clear();
                let mut w = client_write.lock().await;
                match mode {
                    AnswerMode::Rewrite(f) => {
                        *answer_mode.lock().unwrap_or_else(PoisonError::into_inner) =
                            AnswerMode::Pass;
                        if w.write_all(f(&head).as_bytes()).await.is_err()
                            || w.write_all(&rest).await.is_err()
                        {
                            return End::Closed;
                        }
                    }
                    AnswerMode::StallAfterHead(n) => {
                        let _ = w.write_all(head.as_bytes()).await;
                        let _ = w.write_all(&rest[..n.min(rest.len())]).await;
                        drop(w);
                        // Silent from now on, the connection open, until the client gives up.
                        let mut sink = [0u8; 4096];
                        while drain_while_open(&mut server_read, &mut sink).await {}
                        std::future::pending::<()>().await;
                    }
                    AnswerMode::Pass | AnswerMode::Silent => {}
                }
                continue;
            }
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if swallow.load(Ordering::SeqCst) {
                        // The lost answer's request ends the connection when it is done.
                        answer_seen.notify_one();
                        std::future::pending::<()>().await;
                    }
                    return End::Closed;
                }
                Ok(k) => {
                    if swallow.load(Ordering::SeqCst) {
                        answer_seen.notify_one();
                        continue;
                    }
                    // The mode of the request this answer belongs to (set before it was sent).
                    let mode = *answer_mode.lock().unwrap_or_else(PoisonError::into_inner);
                    if matches!(mode, AnswerMode::Silent) {
                        let mut sink = [0u8; 4096];
                        while drain_while_open(&mut server_read, &mut sink).await {}
                        std::future::pending::<()>().await;
                    }
                    if !matches!(mode, AnswerMode::Pass) {
                        held.extend_from_slice(&buf[..k]);
                        continue;
                    }
                    if client_write
                        .lock()
                        .await
                        .write_all(&buf[..k])
                        .await
                        .is_err()
                    {
                        return End::Closed;
                    }
                }
            }
        }
    };
    tokio::select! {
        end = requests => end,
        end = answers => end,
    }
}

/// Reads one request (head and body) from the client, `pending` holding bytes read past the
/// previous one. `None` when the client closes.
async fn read_request(
    read: &mut tokio::net::tcp::ReadHalf<'_>,
    pending: &mut Vec<u8>,
) -> Option<(Vec<u8>, Vec<u8>, Request)> {
    let mut chunk = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = read.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
        pending.extend_from_slice(&chunk[..k]);
    };
    let head: Vec<u8> = pending.drain(..head_end).collect();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Chunks up to the last (size 0) and the trailer section's blank line.
        let mut at = 0;
        loop {
            let line_end = loop {
                if let Some(i) = pending[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                let k = read.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
                pending.extend_from_slice(&chunk[..k]);
            };
            let size_text = String::from_utf8_lossy(&pending[at..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, then an empty line.
                let mut from = line_end + 2;
                loop {
                    if let Some(i) = pending[from..].windows(2).position(|w| w == b"\r\n") {
                        if i == 0 {
                            at = from + 2;
                            break;
                        }
                        from += i + 2;
                        continue;
                    }
                    let k = read.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
                    pending.extend_from_slice(&chunk[..k]);
                }
                break;
            }
            at = line_end + 2 + size + 2;
            while pending.len() < at {
                let k = read.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
                pending.extend_from_slice(&chunk[..k]);
            }
        }
        pending.drain(..at).collect()
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while pending.len() < length {
            let k = read.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
            pending.extend_from_slice(&chunk[..k]);
        }
        pending.drain(..length).collect::<Vec<u8>>()
    };
    let request = Request {
        method,
        target,
        body_len: body.len(),
        head: text.clone(),
    };
    Some((head, body, request))
}

/// Writes an S3 error answer (`status`, `code`, `message`) and closes the connection.
async fn error_answer(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    status: u16,
    code: &str,
    message: &str,
) {
    let reason = match status {
        503 => "Slow Down",
        400 => "Bad Request",
        _ => "Internal Server Error",
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    );
    let _ = w.write_all(answer.as_bytes()).await;
    let _ = w.shutdown().await;
}
