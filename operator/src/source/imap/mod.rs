//! IMAP, read-only: EXAMINE and BODY.PEEK only, so archiving never sets `\Seen` or changes
//! anything in the mailbox.
//!
//! `connect (TLS or STARTTLS) -> login -> LIST -> per folder: EXAMINE -> UID FETCH new UIDs`

pub mod sync;

use super::SourceMessage;
use crate::spool::{Body, BodyWriter};
use crate::{Error, Result, Retry};
use futures::TryStreamExt as _;
use mailvault_core::UnixTime;
use mailvault_core::glob;
use rustls_pki_types::ServerName;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How an IMAP connection is protected: the one TLS-mode type of the CLI (`--imap-tls`), the
/// `MailboxArchive` CRD (`spec.imap.tls`) and the connection itself.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, usually port 993).
    #[default]
    #[value(name = "required")]
    Required,
    /// Plain connection upgraded with STARTTLS before login (usually port 143).
    #[serde(rename = "StartTLS")]
    #[value(name = "starttls")]
    StartTls,
    /// No TLS: only to a loopback host, or with `insecurePlaintext`.
    #[value(name = "disabled")]
    Disabled,
}

impl TlsMode {
    /// The port used when none is given: 993 (IMAPS) for `Required`, 143 otherwise. The one
    /// rule for the CLI and the CRD alike.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Required => 993,
            Self::StartTls | Self::Disabled => 143,
        }
    }
}

/// How to log in.
#[derive(Clone)]
pub enum Credentials {
    /// LOGIN, or AUTHENTICATE PLAIN when the server disables LOGIN.
    Password(String),
    /// AUTHENTICATE XOAUTH2 with a bearer token.
    OAuth2Token(String),
}

impl fmt::Debug for Credentials {
    // Never print a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password(_) => "Password(<redacted>)",
            Self::OAuth2Token(_) => "OAuth2Token(<redacted>)",
        })
    }
}

/// Where and how to read a mailbox.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Server host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// CA bundle to trust instead of the public web roots.
    pub ca: Option<CaBundle>,
    /// Allow `TlsMode::Disabled` to a host that is not loopback.
    pub insecure_plaintext: bool,
    /// Login name.
    pub username: String,
    /// Password or token.
    pub credentials: Credentials,
    /// Network time-out for each step (connect, login, each response).
    pub timeout: Duration,
    /// The largest message archived, in bytes: a larger one is not archived (a capture gap,
    /// reported by folder and UID) and no more than this much of it is read.
    pub max_message_bytes: u64,
    /// Folders read at once, each over its own connection (at least 1): a run opens one more
    /// connection for every [`FOLDERS_PER_CONNECTION`] selected folders past the first few,
    /// up to this many in all.
    pub connections: usize,
}

/// The default of [`ImapConfig::connections`]: well under the connections per user that
/// servers allow by default (Dovecot 10 per user and address, Gmail 15).
pub const DEFAULT_CONNECTIONS: usize = 4;

/// The most [`ImapConfig::connections`] accepts.
pub const MAX_CONNECTIONS: usize = 16;

/// Selected folders per connection a run opens: a connection costs a TLS handshake and a
/// login (several round trips), a folder with nothing new one round trip (EXAMINE), so a second
/// connection pays only once there are several folders to share.
pub const FOLDERS_PER_CONNECTION: usize = 4;

/// The default of [`ImapConfig::max_message_bytes`]: 1 GiB. No mail system delivers messages
/// near this size (most refuse more than 25-150 MB); a "message" larger than this is a broken
/// or hostile server, and one of this size already needs 1 GiB of spool.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 30;

/// PEM certificates to trust, and where they came from (for error messages).
#[derive(Debug, Clone)]
pub struct CaBundle {
    /// A file name or `Secret ns/name key`, as the user would recognise it.
    pub origin: String,
    /// PEM text.
    pub pem: Vec<u8>,
}

impl CaBundle {
    /// Reads a PEM file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            origin: format!("CA file {}", path.display()),
            pem,
        })
    }
}

/// A folder as LIST names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFolder {
    /// The raw name (modified UTF-7, the server's delimiter): the folder's identity.
    pub name: String,
    /// The name for matching and display: decoded, `/` between levels.
    pub display: String,
}

/// A folder as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderState {
    /// Folder name.
    pub name: String,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT (the UID the next message will get).
    pub uid_next: u32,
    /// Messages in the folder.
    pub exists: u32,
    /// HIGHESTMODSEQ when the server has CONDSTORE.
    pub highest_modseq: Option<u64>,
}

/// What a folder's UID FETCH delivers.
#[derive(Debug)]
pub enum Fetched {
    /// A whole message.
    Whole(u32, SourceMessage),
    /// The first piece of a message larger than the piece size: continue with
    /// [`ImapSource::fetch_rest`].
    Partial(MessageMeta, Vec<u8>),
}

/// What [`ImapSource::fetch_rest`] found.
#[derive(Debug)]
pub enum Rest {
    /// The whole message.
    Whole(SourceMessage),
    /// The message was expunged between its pieces: nothing of it is kept.
    Expunged,
    /// The message grew past the size limit: nothing of it is kept; at least this many bytes.
    TooLarge(u64),
}

/// A message's UID and what the server said about it besides its bytes.
#[derive(Debug, Clone)]
pub struct MessageMeta {
    /// UID.
    pub uid: u32,
    /// INTERNALDATE.
    pub internal_date: Option<UnixTime>,
    /// FLAGS at capture.
    pub flags: Vec<String>,
}

impl MessageMeta {
    fn into_message(
        self,
        folder: &FolderState,
        body: Body,
        content_sha256: mailvault_core::Hash,
    ) -> SourceMessage {
        SourceMessage {
            folder: folder.name.clone(),
            identity: super::content_identity(&folder.name, &content_sha256),
            body,
            content_sha256,
            internal_date: self.internal_date,
            flags: self.flags,
            location: format!(
                "imap:{};UIDVALIDITY={};UID={}",
                folder.name, folder.uid_validity, self.uid
            ),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Stream for T {}

/// When a run must stop, if it has a cap, and the per-step time-out.
#[derive(Debug, Clone, Copy)]
pub struct RunDeadline {
    at: Option<(tokio::time::Instant, Duration)>,
    timeout: Duration,
}

impl RunDeadline {
    /// How long the next step may wait for the server: the per-step time-out, or less when
    /// the run's cap comes first (a server trickling just inside the time-out cannot hold a
    /// run past its cap).
    pub fn step_limit(&self) -> Duration {
        self.at.map_or(self.timeout, |(at, _)| {
            self.timeout
                .min(at.saturating_duration_since(tokio::time::Instant::now()))
        })
    }

    /// Refuses to go on once the run has reached its maximum duration.
    pub fn check(&self) -> Result<()> {
        match self.at {
            Some((at, cap)) if tokio::time::Instant::now() >= at => {
                Err(Error::RunDurationExceeded(format!(
                    "the run reached its maximum duration ({}s; --max-run-duration, \
                     spec.maxRunDurationSeconds) and stopped: what it stored is logged and \
                     checkpointed, the cursor moved only past folders read to the end; the \
                     next run goes on from there",
                    cap.as_secs()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// An open, logged-in, read-only IMAP session.
pub struct ImapSource {
    session: async_imap::Session<Box<dyn Stream>>,
    timeout: Duration,
    condstore: bool,
    max_message_bytes: u64,
    /// When the run must stop ([`Self::set_deadline`]), with the cap it came from.
    deadline: Option<(tokio::time::Instant, Duration)>,
    /// How it connected, for [`Self::connect_another`].
    config: ImapConfig,
}

/// Opens another session to the mailbox an [`ImapSource`] reads ([`ImapSource::another`]).
#[derive(Debug, Clone)]
pub struct Reconnect {
    config: ImapConfig,
    deadline: Option<(tokio::time::Instant, Duration)>,
}

impl Reconnect {
    /// Connects and logs in, as [`ImapSource::connect`], with the first session's deadline,
    /// within one step's time-out (or less, when the run's cap comes first).
    pub async fn connect(&self) -> Result<ImapSource> {
        let limit = self.deadline().step_limit();
        let mut other = tokio::time::timeout(limit, ImapSource::connect(&self.config))
            .await
            .map_err(|_| {
                Error::imap(
                    format!(
                        "another IMAP session to {} was not open within {}s",
                        self.config.host,
                        limit.as_secs()
                    ),
                    Retry::Transient,
                )
            })??;
        other.deadline = self.deadline;
        Ok(other)
    }

    /// The run's deadline and the per-step time-out.
    pub fn deadline(&self) -> RunDeadline {
        RunDeadline {
            at: self.deadline,
            timeout: self.config.timeout,
        }
    }
}

/// What an IMAP client error means, in words.
fn describe(e: &async_imap::error::Error) -> String {
    use async_imap::error::Error as E;
    match e {
        E::No(m) => format!("the server said NO: {}", server_words(m)),
        E::Bad(m) => format!("the server said BAD: {}", server_words(m)),
        E::ConnectionLost => "the server closed the connection".to_owned(),
        E::Io(io) => format!("network error: {io}"),
        other => other.to_string(),
    }
}

/// The text of a tagged NO or BAD. async-imap 0.12 hands it over as Rust debug output
/// (`code: None, info: Some("invalid credentials")`), which a user should not have to read:
/// the server's own words are the `info` string; anything else is shown as it came.
fn server_words(m: &str) -> String {
    let Some((_, info)) = m.split_once("info: Some(\"") else {
        return m.to_owned();
    };
    let info = info.strip_suffix("\")").unwrap_or(info);
    info.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// An IMAP step failed: a lost connection or a network error may pass; a NO, a BAD or an
/// unparsable answer will be given again.
fn imap_error(step: &str, e: async_imap::error::Error) -> Error {
    use async_imap::error::Error as E;
    let retry = match &e {
        E::ConnectionLost | E::Io(_) => Retry::Transient,
        _ => Retry::Permanent,
    };
    Error::Imap {
        message: format!("IMAP {step}: {}", describe(&e)),
        retry,
        source: Some(e),
    }
}

async fn timed<T>(
    step: &str,
    limit: Duration,
    fut: impl Future<Output = std::result::Result<T, async_imap::error::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| imap_error(step, e)),
        Err(_) => Err(Error::imap(
            format!("IMAP {step}: no answer within {}s", limit.as_secs()),
            Retry::Transient,
        )),
    }
}

fn tls_connector(ca: Option<&CaBundle>) -> Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let bad = |e: &dyn std::fmt::Display| {
                Error::imap(format!("{}: {e}", ca.origin), Retry::Permanent)
            };
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca.pem) {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no PEM certificate in it"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
}

impl async_imap::Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

struct Plain<'a> {
    user: &'a str,
    password: &'a str,
}

impl async_imap::Authenticator for Plain<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        format!("\0{}\0{}", self.user, self.password)
    }
}

impl ImapSource {
    /// Connects and logs in. Wrong credentials, an untrusted certificate, or a server that does
    /// not answer in time are errors that say which.
    pub async fn connect(config: &ImapConfig) -> Result<Self> {
        if config.tls == TlsMode::Disabled
            && !is_loopback(&config.host)
            && !config.insecure_plaintext
        {
            return Err(Error::Usage(format!(
                "refusing to send the password for {} to {} without TLS; use TLS or STARTTLS \
                 (plaintext is allowed only to a loopback address, or with the insecure flag)",
                config.username, config.host
            )));
        }
        let t = config.timeout;
        let mut client = async_imap::Client::new(open_stream(config).await?);
        if config.tls != TlsMode::StartTls {
            read_greeting(&mut client, t).await?;
        }
        let before_login = capabilities_before_login(&mut client, t).await?;
        let mut session = login(client, config, &before_login).await?;
        let caps = timed("CAPABILITY", t, session.capabilities()).await?;
        let condstore = caps.has_str("CONDSTORE");
        if condstore {
            // Makes EXAMINE report HIGHESTMODSEQ (RFC 7162); changes nothing in the mailbox.
            timed(
                "ENABLE CONDSTORE",
                t,
                session.run_command_and_check_ok("ENABLE CONDSTORE"),
            )
            .await?;
        }
        Ok(Self {
            session,
            timeout: t,
            condstore,
            max_message_bytes: config.max_message_bytes,
            deadline: None,
            config: config.clone(),
        })
    }

    /// What opens another session to the same mailbox, with the same run deadline.
    pub fn another(&self) -> Reconnect {
        Reconnect {
            config: self.config.clone(),
            deadline: self.deadline,
        }
    }

    /// The most connections a run may open to this mailbox ([`ImapConfig::connections`]).
    pub fn max_connections(&self) -> usize {
        self.config.connections.clamp(1, MAX_CONNECTIONS)
    }

    /// Whether the server offers CONDSTORE.
    pub fn has_condstore(&self) -> bool {
        self.condstore
    }

    /// Every selectable folder, sorted.
    pub async fn folders(&mut self) -> Result<Vec<ListedFolder>> {
        let t = self.timeout;
        let names = timed("LIST", t, async {
            self.session
                .list(None, Some("*"))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let mut out: Vec<ListedFolder> = names
            .iter()
            .filter(|n| {
                // \NoSelect (RFC 3501) and \NonExistent (RFC 5258, a parent that only holds
                // children): nothing to EXAMINE.
                !n.attributes().iter().any(|a| {
                    use async_imap::types::NameAttribute as A;
                    match a {
                        A::NoSelect => true,
                        A::Extension(x) => x.eq_ignore_ascii_case("\\NonExistent"),
                        _ => false,
                    }
                })
            })
            .map(|n| ListedFolder {
                name: n.name().to_owned(),
                display: glob::display_name(n.name(), n.delimiter().and_then(|d| d.chars().next())),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Opens a folder read-only (EXAMINE) and reports its state.
    pub async fn examine(&mut self, folder: &str) -> Result<FolderState> {
        let mailbox = timed(
            &format!("EXAMINE {folder}"),
            self.timeout,
            self.session.examine(folder),
        )
        .await?;
        Ok(FolderState {
            name: folder.to_owned(),
            uid_validity: mailbox.uid_validity.unwrap_or(0),
            uid_next: mailbox.uid_next.unwrap_or(0),
            exists: mailbox.exists,
            highest_modseq: mailbox.highest_modseq,
        })
    }

    /// The network time-out for each step.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The run must stop at `deadline`, `cap` after it began (see [`RunDeadline`]).
    pub fn set_deadline(&mut self, deadline: tokio::time::Instant, cap: Duration) {
        self.deadline = Some((deadline, cap));
    }

    /// The run's deadline and the per-step time-out, to consult while the session is busy.
    pub fn deadline(&self) -> RunDeadline {
        RunDeadline {
            at: self.deadline,
            timeout: self.timeout,
        }
    }

    /// Refuses to go on once the run has reached its maximum duration.
    pub fn check_deadline(&self) -> Result<()> {
        self.deadline().check()
    }

    /// The largest message archived ([`ImapConfig::max_message_bytes`]).
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    /// Fetches every message of the examined folder with a UID of at least `from_uid`, as a
    /// stream that yields one message at a time. A message up to `piece` bytes comes whole; of
    /// a larger one only the first `piece` bytes come, and [`Self::fetch_rest`] fetches the rest
    /// piece by piece, so no response holds more than `piece` bytes of a message. Uses
    /// BODY.PEEK, which never sets `\Seen`. Wrap each `next()` in [`Self::timeout`].
    pub async fn fetch_from<'a>(
        &'a mut self,
        folder: &'a FolderState,
        from_uid: u32,
        piece: usize,
    ) -> Result<impl futures::Stream<Item = Result<Fetched>> + 'a> {
        let from_uid = from_uid.max(1);
        let stream = timed(
            "UID FETCH",
            self.timeout,
            self.session.uid_fetch(
                format!("{from_uid}:*"),
                format!("(UID FLAGS INTERNALDATE BODY.PEEK[]<0.{piece}>)"),
            ),
        )
        .await?;
        Ok(stream
            .map_err(move |e| imap_error(&format!("UID FETCH in {}", folder.name), e))
            .try_filter_map(move |fetch| async move {
                let Some(uid) = fetch.uid else {
                    return Ok(None);
                };
                // "n:*" also returns the highest UID when it is below n.
                if uid < from_uid {
                    return Ok(None);
                }
                let Some(body) = fetch.body() else {
                    return Err(Error::imap(
                        format!(
                            "IMAP UID FETCH in {}: the server sent no body for UID {uid}",
                            folder.name
                        ),
                        Retry::Transient,
                    ));
                };
                let meta = MessageMeta {
                    uid,
                    internal_date: fetch.internal_date().map(|d| UnixTime(d.timestamp())),
                    flags: fetch.flags().filter_map(|f| flag_name(&f)).collect(),
                };
                // Only a piece shorter than asked for is known to be the whole message (RFC822.SIZE
                // is not asked: some servers get it wrong, and trusting it could cut a message).
                if body.len() >= piece {
                    return Ok(Some(Fetched::Partial(meta, body.to_vec())));
                }
                let bytes = body.to_vec();
                let content_sha256 = mailvault_core::Hash::of(&bytes);
                Ok(Some(Fetched::Whole(
                    uid,
                    meta.into_message(folder, Body::Memory(bytes), content_sha256),
                )))
            }))
    }

    /// Fetches the rest of a large message after the bytes `writer` already holds, `piece`
    /// bytes at a time (`BODY.PEEK[]<offset.piece>`), into the writer, reading no more than
    /// [`Self::max_message_bytes`] + 1 bytes of it. A server that answers a piece with more
    /// bytes than asked, or with another message's bytes, is refused: what it says cannot be
    /// placed in the message.
    pub async fn fetch_rest(
        &mut self,
        folder: &FolderState,
        meta: MessageMeta,
        mut writer: BodyWriter,
        piece: usize,
    ) -> Result<Rest> {
        let uid = meta.uid;
        loop {
            let offset = writer.len();
            if offset > self.max_message_bytes {
                // Dropping the writer deletes its spool file.
                return Ok(Rest::TooLarge(offset));
            }
            let step = format!("UID FETCH {uid} in {} at byte {offset}", folder.name);
            let fetches = timed(&step, self.timeout, async {
                self.session
                    .uid_fetch(
                        uid.to_string(),
                        format!("(UID BODY.PEEK[]<{offset}.{piece}>)"),
                    )
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
            // No FETCH for the UID: expunged meanwhile. A FETCH without data: past the end
            // (RFC 3501 answers an empty string there; NIL is taken the same way).
            let Some(answer) = fetches.iter().find(|f| f.uid == Some(uid)) else {
                if let Some(other) = fetches.iter().find(|f| f.body().is_some()) {
                    return Err(Error::imap(
                        format!(
                            "IMAP {step}: the server answered with the bytes of another message \
                             ({}) and none for UID {uid}; nothing of UID {uid} is archived from \
                             this answer (a server fault: report it to the mail server's operators)",
                            other.uid.map_or_else(
                                || format!("message number {}", other.message),
                                |u| format!("UID {u}")
                            )
                        ),
                        Retry::Transient,
                    ));
                }
                return Ok(Rest::Expunged);
            };
            let data = answer.body().unwrap_or_default().to_vec();
            drop(fetches);
            if data.len() > piece {
                return Err(Error::imap(
                    format!(
                        "IMAP {step}: the server sent {} bytes for a piece of at most {piece}; \
                         the message cannot be put together from such answers and is not \
                         archived (a server fault: report it to the mail server's operators)",
                        data.len()
                    ),
                    Retry::Permanent,
                ));
            }
            let last = data.len() < piece;
            // File I/O: off the async threads.
            writer = tokio::task::spawn_blocking(move || writer.write(&data).map(|()| writer))
                .await
                .map_err(|e| Error::task(format!("IMAP {step}: spool task"), e))??;
            if last {
                break;
            }
        }
        if writer.len() > self.max_message_bytes {
            return Ok(Rest::TooLarge(writer.len()));
        }
        let (body, content_sha256) = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| Error::task(format!("IMAP UID FETCH {uid}: spool task"), e))??;
        Ok(Rest::Whole(meta.into_message(folder, body, content_sha256)))
    }

    /// UIDs present in the examined folder at or above `from_uid` (no bodies are fetched).
    pub async fn uids_from(&mut self, from_uid: u32) -> Result<Vec<u32>> {
        let mut uids: Vec<u32> = timed(
            "UID SEARCH",
            self.timeout,
            self.session
                .uid_search(format!("UID {}:*", from_uid.max(1))),
        )
        .await?
        .into_iter()
        .filter(|&u| u >= from_uid)
        .collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Logs out.
    pub async fn logout(mut self) -> Result<()> {
        timed("LOGOUT", self.timeout, self.session.logout()).await
    }
}

/// TCP, then TLS (at once, or after STARTTLS), per the configuration.
async fn open_stream(config: &ImapConfig) -> Result<Box<dyn Stream>> {
    let t = config.timeout;
    let at = format!("{}:{}", config.host, config.port);
    let tcp = tokio::time::timeout(t, TcpStream::connect((config.host.as_str(), config.port)))
        .await
        .map_err(|_| {
            Error::imap(
                format!("IMAP connect to {at}: no answer within {}s", t.as_secs()),
                Retry::Transient,
            )
        })?
        .map_err(|e| Error::imap_io(format!("IMAP connect to {at}: {e}"), e))?;
    // Commands are small writes answered by the server: with Nagle's algorithm on, each one can
    // wait for a delayed ACK (about 40 ms a command measured against Cyrus).
    tcp.set_nodelay(true)
        .map_err(|e| Error::imap_io(format!("IMAP connect to {at}: TCP_NODELAY"), e))?;
    let server_name = ServerName::try_from(config.host.clone())
        .map_err(|e| Error::Usage(format!("IMAP host {:?}: {e}", config.host)))?;
    let tcp = match config.tls {
        TlsMode::Disabled => return Ok(Box::new(tcp)),
        TlsMode::Required => tcp,
        TlsMode::StartTls => {
            let mut plain = async_imap::Client::new(tcp);
            read_greeting(&mut plain, t).await?;
            // A NO or BAD (a server without STARTTLS) ends the connection here: never a
            // fallback to plaintext, so the password is not sent.
            timed(
                &format!("STARTTLS at {at}"),
                t,
                plain.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(|e| match e {
                Error::Imap {
                    message,
                    retry: Retry::Permanent,
                    source,
                } => Error::Imap {
                    message: format!(
                        "{message}; mailvault does not log in without TLS: use TLS from the \
                         first byte (IMAPS, usually port 993) if the server offers it"
                    ),
                    retry: Retry::Permanent,
                    source,
                },
                other => other,
            })?;
            plain.into_inner()
        }
    };
    let tls = tokio::time::timeout(
        t,
        tls_connector(config.ca.as_ref())?.connect(server_name, tcp),
    )
    .await
    .map_err(|_| {
        Error::imap(
            format!(
                "IMAP TLS handshake with {at}: no answer within {}s (a server that accepts \
                 connections and says nothing)",
                t.as_secs()
            ),
            Retry::Transient,
        )
    })?
    // A certificate the CA does not vouch for is given again; a reset connection may pass.
    .map_err(|e| Error::imap_io(format!("IMAP TLS handshake with {at}: {e}"), e))?;
    Ok(Box::new(tls))
}

/// What the server offers before login, upper-cased (`AUTH=PLAIN`, `LOGINDISABLED`, ...).
/// Asked with CAPABILITY rather than taken from the greeting: after STARTTLS the greeting's
/// list is void (RFC 3501 6.2.1).
async fn capabilities_before_login(
    client: &mut async_imap::Client<Box<dyn Stream>>,
    t: Duration,
) -> Result<Vec<String>> {
    use async_imap::imap_proto::{Capability, Response};
    let (sender, receiver) = async_channel::unbounded();
    timed(
        "CAPABILITY",
        t,
        client.run_command_and_check_ok("CAPABILITY", Some(sender)),
    )
    .await?;
    let mut out = Vec::new();
    while let Ok(response) = receiver.try_recv() {
        let async_imap::types::UnsolicitedResponse::Other(data) = response else {
            continue;
        };
        if let Response::Capabilities(list) = data.parsed() {
            out.extend(list.iter().map(|c| match c {
                Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
                Capability::Auth(mechanism) => format!("AUTH={}", mechanism.to_ascii_uppercase()),
                Capability::Atom(atom) => atom.to_ascii_uppercase(),
            }));
        }
    }
    Ok(out)
}

/// How a password is sent, from what the server offers: AUTHENTICATE PLAIN when it lists
/// `AUTH=PLAIN`, else LOGIN unless it says `LOGINDISABLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PasswordMethod {
    AuthenticatePlain,
    Login,
}

fn password_method(capabilities: &[String]) -> Option<PasswordMethod> {
    let has = |c: &str| capabilities.iter().any(|x| x == c);
    if has("AUTH=PLAIN") {
        Some(PasswordMethod::AuthenticatePlain)
    } else if has("LOGINDISABLED") {
        None
    } else {
        Some(PasswordMethod::Login)
    }
}

/// Logs in with a password (AUTHENTICATE PLAIN or LOGIN, see [`password_method`]) or XOAUTH2.
async fn login(
    client: async_imap::Client<Box<dyn Stream>>,
    config: &ImapConfig,
    capabilities: &[String],
) -> Result<async_imap::Session<Box<dyn Stream>>> {
    let t = config.timeout;
    let user = config.username.as_str();
    let refused = |e: &async_imap::error::Error| {
        Error::Auth(format!(
            "IMAP login as {user} at {} was refused: {}",
            config.host,
            describe(e)
        ))
    };
    let no_answer = || {
        Error::imap(
            format!("IMAP login as {user}: no answer within {}s", t.as_secs()),
            Retry::Transient,
        )
    };
    match &config.credentials {
        Credentials::Password(password) => match password_method(capabilities) {
            None => Err(Error::Auth(format!(
                "IMAP login as {user} at {}: the server offers neither AUTHENTICATE PLAIN nor \
                 LOGIN on this connection (LOGINDISABLED); use TLS or STARTTLS, or XOAUTH2",
                config.host
            ))),
            Some(PasswordMethod::AuthenticatePlain) => {
                match tokio::time::timeout(
                    t,
                    client.authenticate("PLAIN", Plain { user, password }),
                )
                .await
                {
                    Err(_) => Err(no_answer()),
                    Ok(Ok(session)) => Ok(session),
                    // BAD: it listed PLAIN but does not take it after all; LOGIN is the other
                    // standard way.
                    Ok(Err((async_imap::error::Error::Bad(_), client))) => {
                        match tokio::time::timeout(t, client.login(user, password)).await {
                            Err(_) => Err(no_answer()),
                            Ok(Ok(session)) => Ok(session),
                            Ok(Err((e, _))) => Err(refused(&e)),
                        }
                    }
                    Ok(Err((e, _))) => Err(refused(&e)),
                }
            }
            Some(PasswordMethod::Login) => {
                match tokio::time::timeout(t, client.login(user, password)).await {
                    Err(_) => Err(no_answer()),
                    Ok(Ok(session)) => Ok(session),
                    Ok(Err((e, _))) => Err(refused(&e)),
                }
            }
        },
        Credentials::OAuth2Token(token) => {
            match tokio::time::timeout(t, client.authenticate("XOAUTH2", XOAuth2 { user, token }))
                .await
            {
                Err(_) => Err(no_answer()),
                Ok(Ok(session)) => Ok(session),
                Ok(Err((e, _))) => Err(refused(&e)),
            }
        }
    }
}

async fn read_greeting<T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send>(
    client: &mut async_imap::Client<T>,
    t: Duration,
) -> Result<()> {
    match tokio::time::timeout(t, client.read_response()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(Error::imap(
            "IMAP: the server closed the connection before greeting",
            Retry::Transient,
        )),
        Ok(Err(e)) => Err(Error::imap_io(format!("IMAP greeting: {e}"), e)),
        Err(_) => Err(Error::imap(
            format!("IMAP: no greeting within {}s", t.as_secs()),
            Retry::Transient,
        )),
    }
}

/// A flag as stored with the record; `None` for `\Recent`, which says only that this session
/// is the first to see the message (RFC 3501), not something about the record.
fn flag_name(f: &async_imap::types::Flag<'_>) -> Option<String> {
    use async_imap::types::Flag;
    Some(match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => return None,
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(c) => c.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_shows_the_servers_words_not_debug_output() {
        assert_eq!(
            server_words(r#"code: None, info: Some("say \"hi\"")"#),
            r#"say "hi""#
        );
        assert_eq!(
            server_words("code: None, info: None"),
            "code: None, info: None"
        );
    }

    #[test]
    fn recent_is_not_a_flag_of_the_record() {
        use async_imap::types::Flag;
        assert_eq!(flag_name(&Flag::Recent), None);
        assert_eq!(flag_name(&Flag::Seen).as_deref(), Some("\\Seen"));
        assert_eq!(
            flag_name(&Flag::Custom("$Label1".into())).as_deref(),
            Some("$Label1")
        );
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_password_goes_the_way_the_server_offers() {
        assert_eq!(
            password_method(&caps(&["IMAP4REV1", "AUTH=PLAIN", "AUTH=LOGIN"])),
            Some(PasswordMethod::AuthenticatePlain)
        );
        assert_eq!(
            password_method(&caps(&["IMAP4REV1", "AUTH=CRAM-MD5"])),
            Some(PasswordMethod::Login)
        );
        assert_eq!(
            password_method(&caps(&["IMAP4REV1"])),
            Some(PasswordMethod::Login)
        );
        assert_eq!(
            password_method(&caps(&["IMAP4REV1", "STARTTLS", "LOGINDISABLED"])),
            None
        );
    }
}
