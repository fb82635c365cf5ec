//! `s3://bucket/prefix` — records under S3 Object Lock (COMPLIANCE), on aws-sdk-s3.
//!
//! Every record PUT carries the lock mode, its retain-until and an explicit SHA-256 checksum
//! (the server verifies the bytes it stores against it). The client never looks for instance
//! metadata: region and credentials are static, or credentials come from a web identity token
//! (`AssumeRoleWithWebIdentity`). A plain-http endpoint is refused unless it is loopback or
//! explicitly allowed: `SigV4` protects the keys but not the records or the log in transit.

use super::{ObjectDigest, ObjectMetadata, PieceSink, RecordPut, Store, StoreInfo, StoredObject};
use crate::spool::Body;
use crate::{Error, Result, Retry};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockMode,
};
use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _};
use mailvault_core::entry::LockMode;
use mailvault_core::verify::StoredVersion;
use mailvault_core::{Hash, UnixTime};
use std::fmt;

/// Where and how to reach a bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Archive root inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Region (required: never discovered from instance metadata).
    pub region: String,
    /// Custom endpoint (versitygw, moto, a vendor's S3), or `None` for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS servers need.
    pub path_style: bool,
    /// How requests are signed.
    pub credentials: S3Credentials,
    /// Allow a plain-http endpoint that is not loopback.
    pub insecure_http: bool,
    /// How long each step of an S3 call may take ([`DEFAULT_TIMEOUT`] unless set): opening a
    /// connection, the first byte of an answer (for a PUT, plus [`PUT_SECONDS_PER_MIB`] per
    /// MiB sent), and each piece of an object's body.
    pub timeout: std::time::Duration,
}

/// The default of [`S3Config::timeout`]: as long as IMAP's per-step time-out.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_mins(1);

/// Seconds a PUT's answer may take per MiB sent, beyond [`S3Config::timeout`]: the SDK's read
/// time-out counts from the start of the request, body included, so a large record on a
/// slow link (down to 1 MiB/s) is not taken for a stalled server.
pub const PUT_SECONDS_PER_MIB: u64 = 1;

/// Where the store's credentials come from.
#[derive(Clone)]
pub enum S3Credentials {
    /// Static keys (a Secret, or the environment of the CLI).
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
    },
    /// Temporary keys for `role_arn`, obtained with the OIDC token in `token_file`
    /// (`AssumeRoleWithWebIdentity`: IRSA, a projected `ServiceAccount` token) and renewed before
    /// they expire. STS is reached in the store's region (or at `$AWS_ENDPOINT_URL_STS`).
    WebIdentity {
        /// The IAM role to assume.
        role_arn: String,
        /// The role session name, which the role's trust policy can restrict
        /// (`sts:RoleSessionName`).
        session_name: String,
        /// The token file.
        token_file: std::path::PathBuf,
    },
}

impl fmt::Debug for S3Credentials {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::WebIdentity {
                role_arn,
                session_name,
                token_file,
            } => f
                .debug_struct("WebIdentity")
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials)
            .field("insecure_http", &self.insecure_http)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Refuses an `http://` endpoint unless its host is loopback or `insecure_http` allows it.
pub fn check_endpoint(endpoint: Option<&str>, insecure_http: bool) -> Result<()> {
    let Some(rest) = endpoint.and_then(|e| e.strip_prefix("http://")) else {
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || insecure_http {
        return Ok(());
    }
    Err(Error::store(format!(
        "S3 endpoint {} is plain http to a host that is not loopback: records, log and checkpoints would travel unprotected; use https, or allow it explicitly (storage.insecureHttp: true)",
        endpoint.unwrap_or_default()
    )))
}

/// A bucket store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// The server, as people would name it (for messages).
    server: String,
    /// [`S3Config::timeout`].
    timeout: std::time::Duration,
}

/// What a timed-out S3 call says (`--s3-timeout`, `spec.storage.timeoutSeconds`).
const TIMED_OUT: &str = "no answer within the time-out (--s3-timeout, spec.storage.timeoutSeconds; the SDK's own retries included)";

/// An S3 error in words: the operation, the key, the service's code and message.
/// An S3 call failed. Throttling, 5xx answers, time-outs and failures to reach the endpoint
/// may pass with a retry; any other answer is given again. The SDK's error is kept as the source.
/// `listed` (each key's data versions, and each key's delete markers, newest first, as S3 lists
/// them) as the [`Store::list_version_ids`] contract orders them: by key, each key's data
/// versions oldest first, then its delete markers oldest first.
fn oldest_first(listed: Vec<(String, String, bool)>) -> Vec<(String, String, bool)> {
    let mut out: Vec<(usize, (String, String, bool))> = listed.into_iter().enumerate().collect();
    out.sort_by(|(a_at, a), (b_at, b)| {
        (&a.0, a.2, std::cmp::Reverse(a_at)).cmp(&(&b.0, b.2, std::cmp::Reverse(b_at)))
    });
    out.into_iter().map(|(_, v)| v).collect()
}

fn s3_error<E>(op: &str, key: &str, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retry = match &e {
        SdkError::ServiceError(s)
            if s.raw().status().is_server_error()
                // Throttling and a request the server gave up waiting for, as some
                // S3-compatible servers answer them.
                || matches!(s.raw().status().as_u16(), 408 | 429)
                || matches!(
                    s.err().code(),
                    Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
                ) =>
        {
            Retry::Transient
        }
        SdkError::ServiceError(_) | SdkError::ConstructionFailure(_) => Retry::Permanent,
        _ => Retry::Transient,
    };
    let detail = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("(no message)")
        ),
        SdkError::TimeoutError(_) => TIMED_OUT.to_owned(),
        SdkError::DispatchFailure(d) if d.is_timeout() => TIMED_OUT.to_owned(),
        SdkError::DispatchFailure(d) => format!("cannot reach the S3 endpoint: {d:?}"),
        other => format!("{other:?}"),
    };
    Error::Store {
        message: format!("S3 {op} {key}: {detail}"),
        retry,
        source: Some(Box::new(e)),
    }
}

/// Whether a refused `DeleteObject` was refused by Object Lock: AWS and versitygw answer
/// `AccessDenied` (403) naming the lock, moto `AccessDenied` too; a plain permission refusal
/// (credentials without `s3:DeleteObjectVersion`) is `AccessDenied` without it.
fn is_lock_refusal<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    let SdkError::ServiceError(s) = e else {
        return false;
    };
    let message = s.err().message().unwrap_or("").to_ascii_lowercase();
    matches!(
        s.err().code(),
        Some("AccessDenied" | "InvalidRequest" | "ObjectLocked")
    ) && (message.contains("lock") || message.contains("retention") || message.contains("hold"))
}

fn code<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// The value of `x-amz-checksum-sha256`: base64 of the digest.
fn checksum_header(sha256: &Hash) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha256.0)
}

fn to_datetime(t: UnixTime) -> DateTime {
    DateTime::from_secs(t.0)
}

fn from_datetime(d: &DateTime) -> UnixTime {
    UnixTime(d.secs())
}

/// A version's lock from the headers of a `HeadObject` or `GetObject` answer (the same three).
fn version_lock(
    mode: Option<&ObjectLockMode>,
    retain_until: Option<&DateTime>,
    legal_hold: Option<&ObjectLockLegalHoldStatus>,
) -> super::VersionLock {
    super::VersionLock {
        mode: mode.and_then(|m| match m {
            ObjectLockMode::Compliance => Some(LockMode::Compliance),
            ObjectLockMode::Governance => Some(LockMode::Governance),
            _ => None,
        }),
        retain_until: retain_until.map(from_datetime),
        legal_hold: legal_hold == Some(&ObjectLockLegalHoldStatus::On),
    }
}

impl S3Store {
    /// The COMPLIANCE retain-until in force on one version, from HEAD (not
    /// `GetObjectRetention`: versitygw answers that one with a root element aws-sdk-s3 cannot
    /// decode, docs/s3-servers.md); `None` when it has no COMPLIANCE lock.
    async fn compliance_until(&self, full: &str, version: &str) -> Result<Option<UnixTime>> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .version_id(version)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", full, e))?;
        Ok(head
            .object_lock_retain_until_date()
            .filter(|_| head.object_lock_mode() == Some(&ObjectLockMode::Compliance))
            .map(from_datetime))
    }

    /// A store for `config`; refuses a plain-http endpoint that is neither loopback nor
    /// allowed.
    pub fn new(config: &S3Config) -> Result<Self> {
        check_endpoint(config.endpoint.as_deref(), config.insecure_http)?;
        let region = aws_sdk_s3::config::Region::new(config.region.clone());
        let credentials = match &config.credentials {
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
            } => aws_sdk_s3::config::SharedCredentialsProvider::new(
                aws_sdk_s3::config::Credentials::new(
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    None,
                    None,
                    "mailvault",
                ),
            ),
            S3Credentials::WebIdentity {
                role_arn,
                session_name,
                token_file,
            } => {
                use aws_config::web_identity_token::{
                    StaticConfiguration, WebIdentityTokenCredentialsProvider,
                };
                // A static configuration: no profile files, no instance metadata; the region
                // is the store's.
                let provider_config = aws_config::provider_config::ProviderConfig::without_region()
                    .with_region(Some(region.clone()));
                aws_sdk_s3::config::SharedCredentialsProvider::new(
                    WebIdentityTokenCredentialsProvider::builder()
                        .configure(&provider_config)
                        .static_configuration(StaticConfiguration {
                            web_identity_token_file: token_file.clone(),
                            role_arn: role_arn.clone(),
                            session_name: session_name.clone(),
                        })
                        .build(),
                )
            }
        };
        // S3 answers 503 SlowDown (and 500s) under load: retried with exponential backoff and
        // jitter, six attempts in all, before a run gives up (and retries on its own later).
        let retry = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(std::time::Duration::from_millis(200))
            .with_max_backoff(std::time::Duration::from_secs(10));
        // A connection must open within 10 s (or the step time-out if shorter); an answer must
        // start within the step time-out. No attempt or operation time-out: a large record PUT
        // legitimately takes long (its read time-out grows with its size, see `put_record`),
        // and the run's own cap (`--max-run-duration`) bounds the whole.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)))
            .read_timeout(config.timeout)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts)
            // Every read is hashed here and judged against the log (a tampered record is a
            // verdict, TAMPERED); the SDK's own check of a server checksum would turn it into
            // an I/O error that stops the audit instead.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .region(region)
            .force_path_style(config.path_style)
            .credentials_provider(credentials);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.trim_matches('/').to_owned(),
            server: config
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS S3 {}", config.region)),
            timeout: config.timeout,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    /// `GetObject` with its sidecar and version id; `None` if the key or version is absent.
    async fn get_object(
        &self,
        full: &str,
        version: Option<&str>,
    ) -> Result<
        Option<(
            aws_sdk_s3::operation::get_object::GetObjectOutput,
            ObjectMetadata,
            String,
        )>,
    > {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if matches!(code(&e), Some("NoSuchKey" | "NoSuchVersion")) => return Ok(None),
            Err(e) => return Err(s3_error("GetObject", full, e)),
        };
        let sidecar: ObjectMetadata = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let version_id = out.version_id().unwrap_or_default().to_owned();
        Ok(Some((out, sidecar, version_id)))
    }

    /// An object's body, piece by piece into `sink`, each piece within the step time-out: a
    /// server that sends the headers and then stops sending the body fails the read instead
    /// of holding it.
    async fn read_body(
        &self,
        full: &str,
        mut body: ByteStream,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        loop {
            let piece = match tokio::time::timeout(self.timeout, body.try_next()).await {
                Ok(piece) => piece.map_err(|e| Error::Store {
                    message: format!("S3 GetObject {full}: reading the body: {e}"),
                    retry: Retry::Transient,
                    source: Some(Box::new(e)),
                })?,
                Err(_) => {
                    return Err(Error::Store {
                        message: format!(
                            "S3 GetObject {full}: the server ({}) sent no data within {}s in \
                             the middle of the object's body",
                            self.server,
                            self.timeout.as_secs()
                        ),
                        retry: Retry::Transient,
                        source: None,
                    });
                }
            };
            let Some(piece) = piece else { return Ok(()) };
            sink(&piece)?;
        }
    }

    /// A PUT of `bytes` to `full` carrying their SHA-256 as the checksum the server verifies.
    fn checked_put(
        &self,
        full: &str,
        body: ByteStream,
        sha256: &Hash,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum_header(sha256))
            .body(body)
    }

    /// The version at `full` when a conditional record PUT found the key taken: the version
    /// this very PUT stored on an earlier attempt whose answer was lost (the same user
    /// metadata, which holds the record's random salt), or a conflict: the key holds a record
    /// this PUT did not write, and nothing is written over it.
    async fn version_put_before(&self, full: &str, sidecar: &ObjectMetadata) -> Result<String> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", full, e))?;
        let found: ObjectMetadata = head
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let version = head.version_id().unwrap_or_default();
        if found == *sidecar && !version.is_empty() {
            tracing::info!(
                key = full,
                version,
                "the record was stored by an earlier attempt whose answer was lost"
            );
            return Ok(version.to_owned());
        }
        Err(Error::Conflict(format!(
            "S3 PutObject {full}: the key already holds a record this run did not write \
             (version {version:?}), most likely written by another run on this archive at \
             the same time (one writer at a time: the operator's Lease, or one `archive` \
             command); records are never written twice, so it was not stored again. The next \
             run adopts it if that run logged it; run `mailvault verify` to see what it is"
        )))
    }

    /// What the server keeps, not what it said: after a locked PUT, `HeadObject` of the stored
    /// `version` (with its checksum) must show a COMPLIANCE lock until at least `until` and,
    /// when the server reports a SHA-256, the one sent. An S3 server that accepts the lock
    /// headers and stores the object without them, or answers without them, cannot have its
    /// lock claimed: the run fails naming the server's fault, and nothing is logged as locked.
    async fn confirm_locked(
        &self,
        full: &str,
        version: Option<&str>,
        until: UnixTime,
        sha256: &Hash,
    ) -> Result<()> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", full, e))?;
        let kept = head.object_lock_retain_until_date().map(from_datetime);
        let compliance = head.object_lock_mode() == Some(&ObjectLockMode::Compliance);
        if !compliance || kept.is_none_or(|t| t < until) {
            let shown = match (head.object_lock_mode(), kept) {
                (None, None) => "no Object Lock at all (no x-amz-object-lock-* headers)".to_owned(),
                (mode, kept) => format!(
                    "lock mode {}, retain-until {}",
                    mode.map_or("none", ObjectLockMode::as_str),
                    kept.map_or_else(|| "none".to_owned(), |t| t.to_string())
                ),
            };
            return Err(Error::store(format!(
                "the S3 server ({}) accepted PutObject {full} with a COMPLIANCE lock until {until}, \
                 but HeadObject of version {} shows {shown}: the server did not keep the lock, or \
                 does not report it, so the object was not logged as a locked record. This is a \
                 fault of the S3 server (its Object Lock support); `mailvault verify` reports any \
                 object stored without its lock",
                self.server,
                version.unwrap_or("(current)")
            )));
        }
        let sent = checksum_header(sha256);
        if let Some(reported) = head.checksum_sha256()
            && reported != sent
        {
            return Err(self.checksum_lie("HeadObject", full, reported, &sent));
        }
        Ok(())
    }

    /// The refusal for a server that reports another SHA-256 than the one of the bytes sent.
    fn checksum_lie(&self, op: &str, full: &str, reported: &str, sent: &str) -> Error {
        Error::store(format!(
            "the S3 server ({}) reports checksum SHA-256 {reported} in its {op} answer for {full}, \
             but the bytes sent have SHA-256 {sent} (which the PUT carried for the server to \
             check): the server stored other bytes, or misreports them, so the object was not \
             logged as a record. This is a fault of the S3 server",
            self.server
        ))
    }

    /// A plain PUT with user `metadata`; `lock_until`: If-None-Match and a COMPLIANCE lock
    /// (log objects). Returns false if the key already existed (only with `lock_until`).
    async fn put_plain(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        lock_until: Option<UnixTime>,
    ) -> Result<bool> {
        let full = self.full_key(key);
        let sha256 = Hash::of(&bytes);
        let mut req = self.checked_put(&full, ByteStream::from(bytes), &sha256);
        if let Some(until) = lock_until {
            req = req
                .if_none_match("*")
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(to_datetime(until));
        }
        for (k, v) in metadata {
            req = req.metadata(k, v);
        }
        match req.send().await {
            Ok(out) => {
                if let Some(until) = lock_until {
                    if let Some(reported) = out.checksum_sha256()
                        && reported != checksum_header(&sha256)
                    {
                        return Err(self.checksum_lie(
                            "PutObject",
                            &full,
                            reported,
                            &checksum_header(&sha256),
                        ));
                    }
                    self.confirm_locked(&full, out.version_id(), until, &sha256)
                        .await?;
                }
                Ok(true)
            }
            Err(e) if lock_until.is_some() && matches!(code(&e), Some("PreconditionFailed")) => {
                Ok(false)
            }
            Err(e) => Err(s3_error("PutObject", &full, e)),
        }
    }
}

/// The largest difference between this machine's clock and the S3 server's that a run accepts.
/// Retain-until dates and log times come from this machine's clock; the server keeps its own
/// for Object Lock. Five minutes is far below retention's granularity (days) and far above
/// what NTP leaves.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// Reads the S3 server's clock from the `Date` of its answer, as seconds ahead of this
/// machine's (negative: behind). aws-sdk-s3 corrects its request signatures for clock skew on
/// its own, so a skewed clock would otherwise go unnoticed while it dates every record.
#[derive(Debug, Clone, Default)]
struct ServerClock(std::sync::Arc<std::sync::Mutex<Option<i64>>>);

impl ServerClock {
    fn skew_secs(&self) -> Option<i64> {
        self.0.lock().ok().and_then(|s| *s)
    }
}

impl aws_sdk_s3::config::Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "mailvault::ServerClock"
    }

    fn read_before_deserialization(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let here = crate::unix_now().0;
        let server = context.response().headers().get("date").and_then(|d| {
            DateTime::from_str(d, aws_sdk_s3::primitives::DateTimeFormat::HttpDate).ok()
        });
        if let (Some(server), Ok(mut skew)) = (server, self.0.lock()) {
            *skew = Some(server.secs() - here);
        }
        Ok(())
    }
}

/// The refusal for a clock `skew_secs` off the server's, if that is too far.
fn clock_skew_error(endpoint: &str, skew_secs: i64) -> Option<Error> {
    if skew_secs.abs() <= MAX_CLOCK_SKEW_SECS {
        return None;
    }
    let off = skew_secs.unsigned_abs();
    // Whole minutes past an hour (a Date header has one-second resolution).
    let minutes = (off + 30) / 60;
    let amount = if off < 3600 {
        format!("{} min {} s", off / 60, off % 60)
    } else {
        format!("{} h {} min", minutes / 60, minutes % 60)
    };
    let direction = if skew_secs > 0 { "behind" } else { "ahead of" };
    Some(Error::ClockSkew(format!(
        "this machine's clock is {amount} {direction} the S3 server's ({endpoint}); \
         retain-until dates and log times are taken from this clock and would be off by as \
         much, so nothing was archived. Fix the clock (NTP) and run again (at most {} min \
         apart is accepted)",
        MAX_CLOCK_SKEW_SECS / 60
    )))
}

/// How much later each retry of a record PUT refused for a lock date in the past sets the
/// date (from this machine's clock; the last covers the largest clock skew a run accepts).
const PAST_LOCK_DATE_LEADS: [i64; 3] = [10, 60, MAX_CLOCK_SKEW_SECS + 60];

/// Whether S3 refused a PUT because its Object Lock date is not in the future (AWS and
/// versitygw: `InvalidArgument`, "The retain until date must be in the future!").
fn is_past_lock_date<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            s.err().code() == Some("InvalidArgument")
                && s.err().message().is_some_and(|m| {
                    let m = m.to_ascii_lowercase();
                    m.contains("retain until date") && m.contains("future")
                })
        }
        _ => false,
    }
}

/// A record's body, as a PUT can send it again.
enum PutBody {
    Memory(bytes::Bytes),
    File(std::path::PathBuf),
}

impl PutBody {
    async fn stream(&self, full: &str) -> Result<ByteStream> {
        match self {
            Self::Memory(bytes) => Ok(ByteStream::from(bytes.clone())),
            Self::File(path) => ByteStream::from_path(path).await.map_err(|e| {
                Error::store(format!(
                    "S3 PutObject {full}: cannot read {}: {e}",
                    path.display()
                ))
            }),
        }
    }
}

impl S3Store {
    /// One conditional, locked PUT of a record (the SDK retries transient failures itself).
    async fn put_record_once(
        &self,
        full: &str,
        body: ByteStream,
        sha256: Hash,
        sidecar: &ObjectMetadata,
        lock_date: UnixTime,
        size: u64,
    ) -> std::result::Result<PutObjectOutput, SdkError<PutObjectError>> {
        // If-None-Match: a record is written once. When S3 stored a PUT but its answer was
        // lost (a reset, a time-out), the SDK sends the PUT again: without the condition that
        // would store a second locked version nobody can delete and no log entry names.
        let mut req = self
            .checked_put(full, body, &sha256)
            .if_none_match("*")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(to_datetime(lock_date))
            .content_type("application/zstd");
        for (k, v) in sidecar {
            req = req.metadata(k, v);
        }
        // The signed x-amz-checksum-sha256 header already binds the body (the server checks it),
        // so the SigV4 payload hash would be a second SHA-256 pass on both sides for nothing.
        let read_timeout = self.timeout
            + std::time::Duration::from_secs(PUT_SECONDS_PER_MIB * size.div_ceil(1 << 20));
        req.customize()
            .config_override(
                aws_sdk_s3::Config::builder().timeout_config(
                    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                        .connect_timeout(self.timeout.min(std::time::Duration::from_secs(10)))
                        .read_timeout(read_timeout)
                        .build(),
                ),
            )
            .disable_payload_signing()
            .send()
            .await
    }
}

impl Store for S3Store {
    async fn preflight(&self) -> Result<StoreInfo> {
        // GetObjectLockConfiguration answers both questions: Object Lock can only be enabled
        // on a versioned bucket. (GetBucketVersioning is not used: moto's answer to it cannot
        // be decoded by aws-sdk-s3, see docs/s3-servers.md.) Its answer's Date also tells
        // the server's clock.
        let clock = ServerClock::default();
        let lock = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .customize()
            .interceptor(clock.clone())
            .send()
            .await;
        if let Some(e) = clock
            .skew_secs()
            .and_then(|skew| clock_skew_error(&self.server, skew))
        {
            return Err(e);
        }
        let enabled = match lock {
            Ok(out) => {
                out.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled)
            }
            Err(e) if code(&e) == Some("ObjectLockConfigurationNotFoundError") => false,
            Err(e) if code(&e) == Some("NoSuchBucket") => {
                return Err(Error::store(format!(
                    "bucket {:?} does not exist: create it with Object Lock enabled",
                    self.bucket
                )));
            }
            Err(e) => return Err(s3_error("GetObjectLockConfiguration", &self.bucket, e)),
        };
        if !enabled {
            return Err(Error::store(format!(
                "bucket {:?} does not have Object Lock enabled, so records could be deleted or \
                 overwritten; mailvault refuses to archive into it. Create a bucket with Object \
                 Lock enabled (which also enables versioning) and point the archive at it",
                self.bucket
            )));
        }
        Ok(StoreInfo {
            lock_mode: LockMode::Compliance,
            description: format!(
                "s3://{}/{} (Object Lock, COMPLIANCE)",
                self.bucket, self.prefix
            ),
            server_clock_ahead_secs: clock.skew_secs(),
        })
    }

    async fn put_record(&self, put: RecordPut<'_>) -> Result<String> {
        let full = self.full_key(put.key);
        // A spool file is deleted when its body drops: `_spooled` keeps it until the request
        // (and any retry) is done.
        let size = put.body.len();
        let (body, _spooled) = match put.body {
            Body::Memory(bytes) => (PutBody::Memory(bytes::Bytes::from(bytes)), None),
            // Streamed from the file (and opened again if a retry needs it), so a large record
            // is never held in memory.
            Body::File(file) => (PutBody::File(file.path().to_owned()), Some(file)),
        };
        let mut lock_date = put.retain_until;
        let mut refusals = 0;
        let version = loop {
            match self
                .put_record_once(
                    &full,
                    body.stream(&full).await?,
                    put.sha256,
                    put.sidecar,
                    lock_date,
                    size,
                )
                .await
            {
                Ok(out) => {
                    let sent = checksum_header(&put.sha256);
                    if let Some(reported) = out.checksum_sha256()
                        && reported != sent
                    {
                        return Err(self.checksum_lie("PutObject", &full, reported, &sent));
                    }
                    break out.version_id().map(str::to_owned).ok_or_else(|| {
                        Error::store(format!(
                            "S3 PutObject {full}: no version id in the answer (is versioning on?)"
                        ))
                    })?;
                }
                // A lock date that passed while the PUT waited (a record whose retention has
                // ended is locked only seconds ahead, and a loaded server can take longer to
                // get to it): sent again with a later date, which only locks it longer.
                Err(e) if is_past_lock_date(&e) && refusals < PAST_LOCK_DATE_LEADS.len() => {
                    let from = lock_date.max(crate::unix_now());
                    lock_date = UnixTime(from.0.saturating_add(PAST_LOCK_DATE_LEADS[refusals]));
                    refusals += 1;
                    tracing::warn!(key = %full, lock_until = %lock_date, "S3 refused a lock date that had passed; storing with a later one");
                }
                Err(e) if matches!(code(&e), Some("PreconditionFailed")) => {
                    break self.version_put_before(&full, put.sidecar).await?;
                }
                Err(e) => return Err(s3_error("PutObject", &full, e)),
            }
        };
        // A record is logged as locked only once the server shows the lock it keeps. The
        // companion needs only the record stored, not confirmed: both at once.
        let confirm = self.confirm_locked(&full, Some(&version), put.retain_until, &put.sha256);
        match put.companion {
            Some((key, bytes)) => {
                let no_metadata = ObjectMetadata::new();
                // Boxed: two SDK request futures side by side would make every store task's
                // future too large to move around cheaply.
                let companion = Box::pin(self.put_plain(&key, bytes, &no_metadata, None));
                // Both run to their end; the lock's verdict is the one reported first.
                let (confirmed, companion) = tokio::join!(Box::pin(confirm), companion);
                confirmed?;
                companion?;
            }
            None => confirm.await?,
        }
        Ok(version)
    }

    async fn put_immutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        lock_until: UnixTime,
    ) -> Result<()> {
        if self
            .put_plain(key, bytes.clone(), metadata, Some(lock_until))
            .await?
        {
            return Ok(());
        }
        // An object larger than ours is not ours: read no more of it than ours holds.
        let existing = match self.get(key, None, bytes.len() as u64).await {
            Err(Error::TooLarge { .. }) => None,
            other => other?,
        };
        match existing {
            Some(existing) if existing.bytes == bytes => Ok(()),
            _ => Err(Error::Conflict(format!(
                "{key} already exists with different content; log objects are never rewritten"
            ))),
        }
    }

    async fn put_mutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
    ) -> Result<()> {
        self.put_plain(key, bytes, metadata, None).await.map(|_| ())
    }

    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_len: u64,
    ) -> Result<Option<StoredObject>> {
        let full = self.full_key(key);
        let Some((out, sidecar, version_id)) = self.get_object(&full, version).await? else {
            return Ok(None);
        };
        let too_large = || Error::TooLarge {
            key: key.to_owned(),
            max: max_len,
        };
        if out
            .content_length()
            .is_some_and(|n| u64::try_from(n).map_or(true, |n| n > max_len))
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        // The length the server announced is not trusted: the bytes are counted as they come.
        self.read_body(&full, out.body, &mut |piece| {
            if (bytes.len() + piece.len()) as u64 > max_len {
                return Err(too_large());
            }
            bytes.extend_from_slice(piece);
            Ok(())
        })
        .await?;
        Ok(Some(StoredObject {
            bytes,
            sidecar,
            version_id,
        }))
    }

    async fn read_streaming(
        &self,
        key: &str,
        version: Option<&str>,
        sink: PieceSink<'_>,
    ) -> Result<Option<ObjectDigest>> {
        use sha2::Digest as _;
        let full = self.full_key(key);
        let Some((out, sidecar, version_id)) = self.get_object(&full, version).await? else {
            return Ok(None);
        };
        // Not every server sends the lock with GetObject (versitygw does not): `None` then.
        let lock = (out.object_lock_mode().is_some()
            || out.object_lock_retain_until_date().is_some())
        .then(|| {
            version_lock(
                out.object_lock_mode(),
                out.object_lock_retain_until_date(),
                out.object_lock_legal_hold_status(),
            )
        });
        let mut sha256 = sha2::Sha256::new();
        let mut len = 0u64;
        self.read_body(&full, out.body, &mut |piece| {
            sha256.update(piece);
            len += piece.len() as u64;
            sink(piece)
        })
        .await?;
        Ok(Some(ObjectDigest {
            sha256: Hash(sha256.finalize().into()),
            len,
            sidecar,
            version_id,
            lock,
        }))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full_key(prefix);
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &full, e))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| self.relative(k)) {
                    keys.push(k.to_owned());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_version_ids(&self, prefix: &str) -> Result<Vec<(String, String, bool)>> {
        let full = self.full_key(prefix);
        // S3 lists a key's versions newest first, across pages; the position in the listing
        // orders them (version ids are opaque: random on AWS and moto).
        let mut listed: Vec<(String, String, bool)> = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectVersions", &full, e))?;
            // A page starts after the markers it was asked for; versitygw (1.8) starts with
            // them, which would list that version twice (and a log object with "2 versions"
            // is a sign of tampering to every reader).
            let repeated = |key: Option<&str>, id: Option<&str>| {
                key.is_some() && (key, id) == (key_marker.as_deref(), version_marker.as_deref())
            };
            for v in page.versions() {
                if repeated(v.key(), v.version_id()) {
                    continue;
                }
                if let (Some(k), Some(id)) =
                    (v.key().and_then(|k| self.relative(k)), v.version_id())
                {
                    listed.push((k.to_owned(), id.to_owned(), false));
                }
            }
            for m in page.delete_markers() {
                if repeated(m.key(), m.version_id()) {
                    continue;
                }
                if let (Some(k), Some(id)) =
                    (m.key().and_then(|k| self.relative(k)), m.version_id())
                {
                    listed.push((k.to_owned(), id.to_owned(), true));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            // A listing that says it goes on must say where: stopping there instead would
            // leave out what follows (the newest checkpoints, say) without a word.
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_version_id_marker().map(str::to_owned),
            );
            if next.0.is_none() || next == (key_marker.clone(), version_marker.clone()) {
                return Err(Error::store(format!(
                    "the S3 server ({}) says its listing of the versions under {full} goes on but                      does not say where (or names the same place again); mailvault does not read                      a listing it cannot finish. This is a fault of the S3 server",
                    self.server
                )));
            }
            (key_marker, version_marker) = next;
        }
        Ok(oldest_first(listed))
    }

    async fn version_lock(&self, key: &str, version: &str) -> Result<Option<super::VersionLock>> {
        let fk = self.full_key(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&fk)
            .version_id(version)
            .send()
            .await
        {
            Ok(head) => Ok(Some(version_lock(
                head.object_lock_mode(),
                head.object_lock_retain_until_date(),
                head.object_lock_legal_hold_status(),
            ))),
            Err(e) if matches!(code(&e), Some("NoSuchKey" | "NoSuchVersion" | "NotFound")) => {
                Ok(None)
            }
            Err(e) => Err(s3_error("HeadObject", &fk, e)),
        }
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<(String, StoredVersion)>> {
        let out = self.list_version_ids(prefix).await?;
        // Lock state is per version: ask for it (listings do not carry it), several at a time.
        let versions: Vec<(String, StoredVersion)> = futures::stream::iter(out)
            .map(|(key, version_id, delete_marker)| async move {
                let mut sv = StoredVersion {
                    version_id,
                    delete_marker,
                    ..StoredVersion::default()
                };
                if !delete_marker {
                    let fk = self.full_key(&key);
                    let head = self
                        .client
                        .head_object()
                        .bucket(&self.bucket)
                        .key(&fk)
                        .version_id(&sv.version_id)
                        .send()
                        .await
                        .map_err(|e| s3_error("HeadObject", &fk, e))?;
                    let lock = version_lock(
                        head.object_lock_mode(),
                        head.object_lock_retain_until_date(),
                        head.object_lock_legal_hold_status(),
                    );
                    sv.lock_mode = lock.mode;
                    sv.retain_until = lock.retain_until;
                    sv.legal_hold = lock.legal_hold;
                }
                Ok::<_, Error>((key, sv))
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(versions)
    }

    async fn set_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<()> {
        use aws_sdk_s3::types::ObjectLockLegalHold;
        let full = self.full_key(key);
        let status = if on {
            ObjectLockLegalHoldStatus::On
        } else {
            ObjectLockLegalHoldStatus::Off
        };
        self.client
            .put_object_legal_hold()
            .bucket(&self.bucket)
            .key(&full)
            .version_id(version)
            .legal_hold(ObjectLockLegalHold::builder().status(status).build())
            .send()
            .await
            .map_err(|e| s3_error("PutObjectLegalHold", &full, e))?;
        Ok(())
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: &str,
        until: UnixTime,
    ) -> Result<UnixTime> {
        use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
        let full = self.full_key(key);
        if let Some(t) = self.compliance_until(&full, version).await?
            && t >= until
        {
            return Ok(t);
        }
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(&full)
            .version_id(version)
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::Compliance)
                    .retain_until_date(to_datetime(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("PutObjectRetention", &full, e))?;
        // Taken as done only once HEAD shows it (a server may answer 200 and keep nothing).
        let kept = self.compliance_until(&full, version).await?;
        match kept {
            Some(t) if t >= until => Ok(t),
            _ => Err(Error::store(format!(
                "the S3 server ({}) accepted PutObjectRetention for {full} version {version} \
                 (COMPLIANCE until {until}), but HeadObject shows retain-until {}: the lock is \
                 not in force. This is a fault of the S3 server",
                self.server,
                kept.map_or_else(|| "none".to_owned(), |t| t.to_string())
            ))),
        }
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        let full = self.full_key(key);
        // Never `x-amz-bypass-governance-retention`: records are COMPLIANCE-locked, and a
        // destruction run must be refused by the server whenever a lock is still in force.
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .version_id(version_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("NoSuchVersion" | "NoSuchKey")) => Ok(()),
            Err(e) if is_lock_refusal(&e) => {
                let detail = match &e {
                    SdkError::ServiceError(s) => format!(
                        "{}: {}",
                        s.err().code().unwrap_or("error"),
                        s.err().message().unwrap_or("(no message)")
                    ),
                    other => format!("{other:?}"),
                };
                Err(Error::ObjectLocked(format!(
                    "S3 DeleteObject {full} version {version_id} refused: the version is under \
                     Object Lock (retention not ended, or a legal hold), so it cannot be \
                     deleted yet ({detail})"
                )))
            }
            Err(e) => Err(s3_error("DeleteObject", &full, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_versions_are_put_oldest_first_then_its_markers() {
        let v = |k: &str, id: &str, marker: bool| (k.to_owned(), id.to_owned(), marker);
        // As S3 lists them: by key, newest first; versions and markers in separate lists.
        let listed = vec![
            v("a", "a3", false),
            v("a", "a2", false),
            v("a", "a1", false),
            v("b", "b2", false),
            v("b", "b1", false),
            v("a", "am2", true),
            v("a", "am1", true),
            v("c", "cm1", true),
        ];
        assert_eq!(
            oldest_first(listed),
            vec![
                v("a", "a1", false),
                v("a", "a2", false),
                v("a", "a3", false),
                v("a", "am1", true),
                v("a", "am2", true),
                v("b", "b1", false),
                v("b", "b2", false),
                v("c", "cm1", true),
            ]
        );
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        for ok in [
            None,
            Some("https://s3.example.com"),
            Some("http://127.0.0.1:27070"),
            Some("http://127.8.0.1"),
            Some("http://localhost:9000/base"),
            Some("http://[::1]:9000"),
        ] {
            assert!(check_endpoint(ok, false).is_ok(), "{ok:?}");
        }
        for refused in [
            "http://s3.example.com",
            "http://10.0.0.5:9000",
            "http://localhost.example.com",
            "http://[2001:db8::1]:9000",
        ] {
            let e = check_endpoint(Some(refused), false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(refused) && e.contains("insecureHttp"), "{e}");
            assert!(check_endpoint(Some(refused), true).is_ok());
        }
    }

    #[test]
    fn a_clock_more_than_five_minutes_off_the_servers_is_refused_saying_by_how_much() {
        assert!(clock_skew_error("http://s3", 0).is_none());
        assert!(clock_skew_error("http://s3", MAX_CLOCK_SKEW_SECS).is_none());
        assert!(clock_skew_error("http://s3", -MAX_CLOCK_SKEW_SECS).is_none());
        let behind = clock_skew_error("http://s3", 2 * 3600 + 5 * 60)
            .unwrap()
            .to_string();
        assert!(
            behind.contains("2 h 5 min behind the S3 server's (http://s3)"),
            "{behind}"
        );
        let ahead = clock_skew_error("http://s3", -(6 * 60 + 7))
            .unwrap()
            .to_string();
        assert!(ahead.contains("6 min 7 s ahead of"), "{ahead}");
        // A second short of two hours (Date headers have one-second resolution) is two hours.
        let rounded = clock_skew_error("http://s3", 2 * 3600 - 1)
            .unwrap()
            .to_string();
        assert!(rounded.contains("2 h 0 min behind"), "{rounded}");
        assert!(matches!(
            clock_skew_error("http://s3", 301),
            Some(Error::ClockSkew(_))
        ));
    }
}
