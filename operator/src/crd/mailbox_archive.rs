//! MailboxArchive: one mailbox (account) archived into one bucket prefix on a schedule.

use super::{CRON_PATTERN, LocalRef, SecretKeyRef};
use crate::source::imap::TlsMode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to archive, where to, and when.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailvault.io",
    version = "v1alpha1",
    kind = "MailboxArchive",
    namespaced,
    status = "MailboxArchiveStatus",
    shortname = "mba",
    category = "mailvault",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Messages","type":"integer","jsonPath":".status.totals.records"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSync.end"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MailboxArchiveSpec {
    /// The mailbox to read (read-only: EXAMINE and BODY.PEEK).
    pub imap: ImapSpec,
    /// The bucket the records and the record log go to, under
    /// `<prefix>/<namespace>/<name>/`.
    pub storage: StorageSpec,
    /// When to archive: cron, five fields (minute hour day-of-month month day-of-week) or a
    /// macro such as `@hourly`. The first run starts as soon as the archive is created; missed
    /// runs are not replayed in a burst, only the latest one is.
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone the schedule is read in.
    #[serde(default = "default_time_zone")]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-/]*$"))]
    pub time_zone: String,
    /// Stop starting runs (a run in progress finishes).
    #[serde(default)]
    pub suspend: bool,
    /// The RetentionPolicy (same namespace) that decides each record's series and retain-until.
    pub retention_policy_ref: LocalRef,
    /// Secret key holding the Ed25519 checkpoint signing key (`PRIVATE+KEY+...`). When absent
    /// the operator generates one into the Secret `<name>-signing-key` and keeps it there even
    /// if the archive is deleted: the log can only be continued with its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretKeyRef>,
    /// Where archive runs execute: `InProcess` (a task of the operator) or `Job` (a Kubernetes
    /// Job per run, under a ServiceAccount that may read only this archive's Secrets). Default:
    /// the operator's `--default-runner` (chart value `runner.default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
    /// The longest a run may read mail, in seconds (default: no cap). At the cap the run
    /// stops: what it stored is logged, the cursor moves only past folders read to the end,
    /// and the run fails with reason `RunDurationExceeded` (condition, Warning Event); the next
    /// run goes on from there. Bounds a run against a server that trickles data just inside
    /// the per-step time-outs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_run_duration_seconds: Option<u32>,
}

/// Where an archive run executes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Runner {
    /// A task of the operator (at most `--concurrent-runs` at once).
    #[default]
    InProcess,
    /// A Kubernetes Job per run (at most `--max-jobs` in flight).
    Job,
}

impl std::str::FromStr for Runner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "InProcess" => Ok(Self::InProcess),
            "Job" => Ok(Self::Job),
            other => Err(format!("{other:?} is not a runner (InProcess or Job)")),
        }
    }
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// The IMAP account to archive.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.tls != 'Disabled' || self.insecurePlaintext || self.host in ['127.0.0.1', '::1', 'localhost']").message("tls: Disabled sends the password in clear; it is allowed only for a loopback host or with insecurePlaintext: true").reason(Reason::FieldValueForbidden).field_path(".tls"))]
pub struct ImapSpec {
    /// Server host name or address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Server port (default 993 with TLS Required, 143 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Required, StartTLS or Disabled.
    #[serde(default)]
    pub tls: TlsMode,
    /// Allow `tls: Disabled` to a host that is not loopback.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Login name.
    #[schemars(length(min = 1, max = 320))]
    pub username: String,
    /// Secret key holding the password (LOGIN / AUTHENTICATE PLAIN).
    pub password_secret_ref: SecretKeyRef,
    /// Secret key holding a PEM CA bundle to trust instead of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Folders to archive (globs: `*` within a level, `**` across levels). Default: every
    /// folder, Trash and Junk too: a message moved to Trash is still a record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub include: Vec<String>,
    /// Folders to leave out (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub exclude: Vec<String>,
    /// The largest message archived, in bytes (default 1 GiB). A larger one is not archived:
    /// the run names it by folder and UID and counts it as a capture gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u64>,
    /// Seconds to wait for each network step (connect, TLS, login, each answer and each piece
    /// of a FETCH) before the run fails (default 60): a server that stops answering fails
    /// the run and frees its slot instead of holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// The most IMAP sessions a run reads folders over at once (default 4). A run opens one
    /// more for every 4 selected folders past the first 4; a server that refuses one (a limit
    /// on connections per user) leaves the folders to the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub connections: Option<u8>,
}

impl ImapSpec {
    /// The port to connect to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }
}

/// The S3 bucket (with versioning and Object Lock) the archive is written to.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.credentialsSecretRef) != has(self.webIdentity)").message("give exactly one of credentialsSecretRef (static keys in a Secret) and webIdentity (a role assumed with the operator's web identity token)").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.endpoint) || !self.endpoint.startsWith('http://') || self.insecureHttp || self.endpoint.startsWith('http://[::1]') || self.endpoint.matches('^http://(localhost|127[.][0-9]+[.][0-9]+[.][0-9]+)(:[0-9]+)?(/.*)?$')").message("a plain-http endpoint sends records and the log unprotected; it is allowed only for a loopback host or with insecureHttp: true").reason(Reason::FieldValueForbidden).field_path(".endpoint"))]
pub struct StorageSpec {
    /// Bucket name (it must have versioning and Object Lock enabled; the operator refuses to
    /// write otherwise).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix; the archive lives under `<prefix>/<namespace>/<name>/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()\-/]*$"))]
    pub prefix: String,
    /// S3 region.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint URL for S3 servers other than AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"), length(max = 2048))]
    pub endpoint: Option<String>,
    /// Path-style addressing (most non-AWS servers need it).
    #[serde(default)]
    pub path_style: bool,
    /// Allow an `http://` endpoint that is not loopback (records and the log would travel
    /// unprotected).
    #[serde(default)]
    pub insecure_http: bool,
    /// Seconds each step of an S3 call may take before the run fails (default 60): opening
    /// a connection, the first byte of an answer (a PUT gets one more second per MiB sent),
    /// each piece of an object read back. A server that stops answering fails the run and
    /// frees its slot instead of holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Secret with the access key id and secret access key (it must opt in for this archive:
    /// annotation `mailvault.io/allowed-archives`). Exactly one of this and `webIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
    /// Temporary credentials for an IAM role, assumed with the operator's web identity token
    /// (IRSA or a projected ServiceAccount token; AssumeRoleWithWebIdentity). The session name
    /// is `<namespace>.<archive>`, so the role's trust policy can restrict which namespaces may
    /// use it (`sts:RoleSessionName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentity>,
}

/// An IAM role assumed by web identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebIdentity {
    /// The role's ARN.
    #[schemars(regex(pattern = r"^arn:aws[a-z\-]*:iam::[0-9]{12}:role/[\w+=,.@\-/]{1,512}$"))]
    pub role_arn: String,
}

/// Where the S3 credentials are.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}

/// What the operator last saw and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxArchiveStatus {
    /// `Ready` (the last run succeeded and the spec is valid), `Synced` (a run finished
    /// without error), `Degraded` (something needs a person).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The schedule slot of the last run (RFC 3339); the next slot is computed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<LastSync>,
    /// When the next run is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync: Option<String>,
    /// Failed runs in a row (retried with backoff before the next slot).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// What the archive holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Per-folder capture state (the copy in the bucket is authoritative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderStatus>,
    /// The record log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogStatus>,
    /// The checkpoint verifier key auditors use (`name+keyid+key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The Job of the last run that ran as a Job (`runner: Job`): the run records its outcome
    /// here with the rest of the status, so a Job that ended without this name recorded ended
    /// without an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// Destruction runs (the RetentionPolicy's `destruction.schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destruction: Option<super::DestructionStatus>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a run ended.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunResult {
    /// Every selected folder was read and every new message archived.
    Succeeded,
    /// The run stopped; what was archived before the failure is kept and logged.
    Failed,
}

/// One run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSync {
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
    /// Messages archived by the run.
    pub messages: u64,
    /// Original bytes archived by the run.
    pub bytes: u64,
    /// Messages expunged from the mailbox before they could be captured.
    #[serde(default)]
    pub capture_gaps: u64,
    /// Outcome.
    pub result: RunResult,
    /// Why it failed: the condition reason (`AuthenticationFailed`, `StoreError`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed, in words; for a run that succeeded, its warnings (an include glob that
    /// matched no folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the archive holds, from its log.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Records ingested.
    pub records: u64,
}

/// A folder's capture state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FolderStatus {
    /// Folder name.
    pub name: String,
    /// UIDVALIDITY the state belongs to.
    pub uid_validity: u32,
    /// Highest UID captured.
    pub last_uid: u32,
    /// HIGHESTMODSEQ at the last run, where the server has CONDSTORE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_mod_seq: Option<u64>,
}

/// The record log's head.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogStatus {
    /// Entries in the log.
    pub size: u64,
    /// Merkle root of the latest signed checkpoint (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// The latest signed checkpoint (a C2SP signed note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

impl MailboxArchiveSpec {
    /// What the schema cannot check: the schedule's fields, the time zone. Every problem, one
    /// line each, in words a platform engineer can act on.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = super::parse_cron(&self.schedule) {
            problems.push(format!("schedule: {e}"));
        }
        if let Err(e) = super::parse_time_zone(&self.time_zone) {
            problems.push(format!("timeZone: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
