//! Shared helpers for the integration tests: where the local components are (the env file
//! written by `tests/env/up`) and clients for each, built with the crates the product uses.
//!
//! A component that is not there fails the test with its name and how to start it; nothing is
//! skipped silently.

pub mod cluster;
pub mod delay_proxy;
pub mod fault_proxy;
pub mod imap_script;
pub mod kubelet;
pub mod operator;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

/// The local environment as `tests/env/up` described it.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: HashMap<String, String>,
}

/// An S3 server of the local environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Flavour {
    /// versitygw, posix backend with versioning: enforces Object Lock fully.
    Versitygw,
    /// moto server: enforces locked deletes, but lets COMPLIANCE retention be shortened.
    Moto,
}

impl S3Flavour {
    fn prefix(self) -> &'static str {
        match self {
            Self::Versitygw => "VERSITYGW",
            Self::Moto => "MOTO",
        }
    }
}

/// A mail account in the local Dovecot.
#[derive(Debug, Clone)]
pub struct MailUser {
    /// Login name.
    pub name: String,
    /// Password (test-only, random per user).
    pub password: String,
}

/// A finished command's exit status, stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `mailvault` binary of this build (`make integration` builds it before the tests): beside
/// this executable (a bin) or one directory up (a test, which lives in `deps/`).
pub fn mailvault_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("mailvault"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the mailvault binary is not built (looked for {candidates:?}): run `cargo build -p mailvault` (make integration does)"
            )
        })
}

/// Installs the process-wide rustls crypto provider once. kube and aws-sdk both use rustls;
/// without an explicit provider rustls panics when more than one backend is compiled in.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A name unique to this test run: `prefix-<pid>-<nanos>`, valid as a k8s name and bucket name.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

impl TestEnv {
    /// Reads the env file (`$MAILVAULT_ENV_FILE`, else `$MAILVAULT_ENV_DIR/env`, else
    /// `/tmp/mailvault-env/env`). Panics with instructions if the environment is not up.
    pub fn load() -> Self {
        install_crypto_provider();
        let path = std::env::var_os("MAILVAULT_ENV_FILE").map_or_else(
            || {
                let dir = std::env::var_os("MAILVAULT_ENV_DIR")
                    .map_or_else(|| std::env::temp_dir().join("mailvault-env"), PathBuf::from);
                dir.join("env")
            },
            PathBuf::from,
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "local environment not found ({}: {e}); start it with `make env-up` (tests/env/up)",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { vars }
    }

    /// A variable of the env file; panics naming it if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the env file: rerun tests/env/up"))
    }

    /// Path of the test CA certificate (PEM).
    pub fn ca_path(&self) -> &Path {
        Path::new(self.var("MAILVAULT_CA"))
    }

    /// Fails the test, naming `component`, unless something listens on `host:port`.
    pub fn require_listening(component: &str, host: &str, port: u16) {
        if let Err(e) = std::net::TcpStream::connect((host, port)) {
            panic!(
                "{component} is not reachable at {host}:{port} ({e}); start the environment with `make env-up`"
            );
        }
    }

    fn require_url(component: &str, url: &str) {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (host, port) = hostport.rsplit_once(':').expect("url with a port");
        Self::require_listening(component, host, port.parse().expect("port"));
    }

    // ---- Kubernetes ---------------------------------------------------------------------

    /// A kube client for the admin identity (system:masters).
    pub async fn kube_admin(&self) -> kube::Client {
        self.kube_client("KUBECONFIG").await
    }

    /// A kube client for an identity with no RBAC grants.
    pub async fn kube_unprivileged(&self) -> kube::Client {
        self.kube_client("KUBECONFIG_UNPRIVILEGED").await
    }

    async fn kube_client(&self, var: &str) -> kube::Client {
        Self::require_url("kube-apiserver", self.var("KUBE_APISERVER"));
        let kubeconfig = kube::config::Kubeconfig::read_from(self.var(var))
            .unwrap_or_else(|e| panic!("reading {var}: {e}"));
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {var}: {e}"));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    // ---- S3 -----------------------------------------------------------------------------

    /// Endpoint URL of an S3 flavour.
    pub fn s3_endpoint(&self, flavour: S3Flavour) -> &str {
        self.var(&format!("{}_ENDPOINT", flavour.prefix()))
    }

    /// The `mailvault` binary run with `args` against an S3 flavour: the endpoint, path-style and
    /// region flags (for commands that take a store) and the flavour's credentials in the
    /// environment, never as flags.
    pub fn mailvault_s3(&self, flavour: S3Flavour, args: &[&str]) -> std::process::Command {
        self.mailvault_s3_with(&mailvault_binary(), flavour, args)
    }

    /// [`Self::mailvault_s3`] with another build of the binary (a benchmark's baseline).
    pub fn mailvault_s3_with(
        &self,
        binary: &Path,
        flavour: S3Flavour,
        args: &[&str],
    ) -> std::process::Command {
        let p = flavour.prefix();
        let mut c = std::process::Command::new(binary);
        c.args(args);
        if !matches!(args.first(), Some(&"keygen" | &"verify-proof")) {
            c.args([
                "--s3-endpoint",
                self.s3_endpoint(flavour),
                "--s3-path-style",
            ])
            .args(["--s3-region", self.var("S3_REGION")]);
        }
        c.env("AWS_ACCESS_KEY_ID", self.var(&format!("{p}_ACCESS_KEY")))
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.var(&format!("{p}_SECRET_KEY")),
            )
            .env_remove("AWS_REGION");
        c
    }

    /// An S3 client for a flavour: static credentials and region (never instance metadata),
    /// path-style addressing.
    pub fn s3_client(&self, flavour: S3Flavour) -> aws_sdk_s3::Client {
        let name = match flavour {
            S3Flavour::Versitygw => "versitygw",
            S3Flavour::Moto => "moto server",
        };
        Self::require_url(name, self.s3_endpoint(flavour));
        let p = flavour.prefix();
        let credentials = aws_sdk_s3::config::Credentials::new(
            self.var(&format!("{p}_ACCESS_KEY")),
            self.var(&format!("{p}_SECRET_KEY")),
            None,
            None,
            "mailvault-test-env",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(
                self.var("S3_REGION").to_owned(),
            ))
            .endpoint_url(self.s3_endpoint(flavour))
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// mailvault's own S3 store for `bucket`, with the archive under `prefix` (no trailing
    /// slash), on a flavour: what a test reads or plants through, as mailvault sees the bucket.
    pub fn s3_store(
        &self,
        flavour: S3Flavour,
        bucket: &str,
        prefix: &str,
    ) -> mailvault::store::s3::S3Store {
        use mailvault::store::s3::{S3Config, S3Credentials, S3Store};
        let p = flavour.prefix();
        S3Store::new(&S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: self.var("S3_REGION").to_owned(),
            endpoint: Some(self.s3_endpoint(flavour).to_owned()),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key_id: self.var(&format!("{p}_ACCESS_KEY")).to_owned(),
                secret_access_key: self.var(&format!("{p}_SECRET_KEY")).to_owned(),
            },
            insecure_http: false,
            timeout: mailvault::store::s3::DEFAULT_TIMEOUT,
        })
        .unwrap_or_else(|e| panic!("an S3 store for {bucket}: {e}"))
    }

    /// Creates a bucket, with versioning and Object Lock when `object_lock` (as a records bucket
    /// must have), or a plain one (to test that mailvault refuses it).
    pub async fn create_bucket(&self, flavour: S3Flavour, bucket: &str, object_lock: bool) {
        self.s3_client(flavour)
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(object_lock)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
    }

    // ---- IMAP ---------------------------------------------------------------------------

    /// Host of the local Dovecot.
    pub fn imap_host(&self) -> &str {
        self.var("IMAP_HOST")
    }

    /// IMAPS (implicit TLS) port.
    pub fn imaps_port(&self) -> u16 {
        self.var("IMAPS_PORT").parse().expect("IMAPS_PORT")
    }

    /// Plain port that requires STARTTLS before login.
    pub fn imap_starttls_port(&self) -> u16 {
        self.var("IMAP_STARTTLS_PORT")
            .parse()
            .expect("IMAP_STARTTLS_PORT")
    }

    /// A rustls connector that trusts only the test CA.
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(self.ca_path())
            .expect("reading the test CA")
        {
            roots
                .add(cert.expect("CA PEM"))
                .expect("adding the test CA");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// An IMAPS client that has read the greeting, trusting only the test CA.
    pub async fn imap_client(
        &self,
    ) -> async_imap::Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect((self.imap_host(), self.imaps_port()))
            .await
            .expect("connecting to Dovecot");
        let name = rustls_pki_types::ServerName::try_from(self.imap_host().to_owned())
            .expect("server name");
        let tls = self
            .tls_connector()
            .connect(name, tcp)
            .await
            .expect("TLS handshake with Dovecot");
        let mut client = async_imap::Client::new(tls);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        client
    }

    /// A logged-in IMAPS session for `user`, for tests that look at or change a mailbox the way
    /// a mail client would (never used by mailvault itself).
    pub async fn imap_login(
        &self,
        user: &MailUser,
    ) -> async_imap::Session<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.imap_client()
            .await
            .login(&user.name, &user.password)
            .await
            .map_err(|(e, _)| e)
            .expect("login")
    }

    /// Creates a Dovecot user with a random password (Dovecot re-reads its passwd-file when it
    /// changes, so no restart is needed).
    pub fn new_mail_user(&self, prefix: &str) -> MailUser {
        use std::io::Write as _;
        Self::require_listening("Dovecot", self.imap_host(), self.imaps_port());
        let name = unique_name(prefix);
        let password = format!("pw-{}", unique_name("x").replace('-', ""));
        // One write(2) per line under a process-wide lock: tests add users from many threads,
        // and a line split across two writes could interleave with another and be lost.
        static PASSWD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = PASSWD_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = format!("{name}:{{PLAIN}}{password}::::::\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.var("IMAP_PASSWD_FILE"))
            .expect("opening Dovecot's passwd-file");
        f.write_all(line.as_bytes()).expect("adding a Dovecot user");
        // Dovecot looks at a passwd-file at most once per second (its ioloop time): a lookup
        // earlier in this second may have read the file before our line. From the next second
        // on, the new size makes it re-read. Wait that out.
        let subsec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_millis());
        std::thread::sleep(std::time::Duration::from_millis(
            u64::from(1000 - subsec) + 20,
        ));
        MailUser { name, password }
    }

    /// Writes a message into `user`'s Maildir folder (`INBOX` or another name), as a mail
    /// server's delivery would, with Maildir flags (`S` seen, `F` flagged, ...). Returns the path.
    pub fn seed_message(
        &self,
        user: &MailUser,
        folder: &str,
        bytes: &[u8],
        flags: &str,
    ) -> PathBuf {
        self.seed_message_with(user, folder, flags, |file| {
            std::io::Write::write_all(file, bytes)
        })
    }

    /// [`Self::seed_message`] for a message written by `write` (a large one generated as it
    /// is written, never held in memory).
    pub fn seed_message_with(
        &self,
        user: &MailUser,
        folder: &str,
        flags: &str,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let uid: u32 = self.var("IMAP_MAIL_UID").parse().expect("uid");
        let gid: u32 = self.var("IMAP_MAIL_GID").parse().expect("gid");
        let home = Path::new(self.var("IMAP_MAIL_ROOT")).join(&user.name);
        let maildir = home.join("Maildir");
        let dir = if folder.eq_ignore_ascii_case("INBOX") {
            maildir.clone()
        } else {
            maildir.join(format!(".{}", folder.replace('/', ".")))
        };
        for d in [&home, &maildir] {
            std::fs::create_dir_all(d).expect("creating the Maildir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown (tests run as root)");
        }
        for sub in ["", "cur", "new", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).expect("creating a Maildir folder");
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).expect("chown");
        }
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("{secs}.M{n}P{}.mailvault-test", std::process::id());
        let (sub, name) = if flags.is_empty() {
            ("new", base)
        } else {
            ("cur", format!("{base}:2,{flags}"))
        };
        // Write in tmp/ then rename, as Maildir delivery does, so Dovecot never sees half a file.
        let tmp = dir.join("tmp").join(&name);
        let mut file = std::fs::File::create(&tmp).expect("creating a message file");
        write(&mut file).expect("writing a message");
        drop(file);
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).expect("chown");
        let path = dir.join(sub).join(&name);
        std::fs::rename(&tmp, &path).expect("delivering a message");
        path
    }
}

/// The archive's writer on `store`, signing with the key at `key` (the log's origin is its
/// name): what a test uses to log entries as mailvault would, between the CLI's runs. Its
/// retention schedule is unused (it logs no ingest).
pub async fn open_writer<'s, S: mailvault::store::Store>(
    store: &'s S,
    key: &Path,
) -> mailvault::writer::RecordWriter<'s, S> {
    let signer = mailvault::signing_key::read_signer_key(key).expect("reading the signing key");
    let origin = signer.name().to_owned();
    let schedule = mailvault::core::rules::RetentionSchedule::single(
        "unused",
        mailvault::core::retention::Period::Permanent,
    )
    .expect("a schedule");
    mailvault::writer::RecordWriter::open(store, &origin, signer, schedule, mailvault::unix_now())
        .await
        .expect("opening the archive's writer")
}

/// The repository root (CRDs, charts and examples are read from it).
pub fn repo_root() -> PathBuf {
    // At run time cargo sets this checkout's directory; the compile-time value is where the
    // binary was built, which differs when checkouts share a build cache (CI's does).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The CRDs committed under `crds/`, parsed.
pub fn committed_crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    let path = repo_root().join("crds/mailvault.yaml");
    let text = std::fs::read_to_string(&path).expect("reading crds/mailvault.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a CRD document"))
        .collect()
}

/// Applies the committed CRDs (server-side apply) and waits until each is Established.
pub async fn apply_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in committed_crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(
            &name,
            &PatchParams::apply("mailvault-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 60 s"))
        .expect("waiting for the CRD");
    }
}

/// Applies a JSON merge patch (RFC 7386: `null` deletes) to `target`.
pub fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            match t.get_mut(k) {
                _ if v.is_null() => {
                    t.remove(k);
                }
                Some(existing) if existing.is_object() && v.is_object() => json_merge(existing, v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Creates a namespace with a unique name and returns the name.
pub async fn new_namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = unique_name(prefix);
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    kube::Api::<Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .expect("creating a namespace");
    name
}

#[cfg(test)]
mod tests {
    use super::TestEnv;

    #[test]
    #[should_panic(expected = "versitygw is not reachable at 127.0.0.1:1")]
    fn a_missing_component_is_named() {
        // Port 1 on loopback has no listener here: the failure must say which component is missing.
        TestEnv::require_listening("versitygw", "127.0.0.1", 1);
    }
}
