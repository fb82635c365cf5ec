//! Running `mailvault operator` as a real process under the chart's RBAC.

use crate::{TestEnv, mailvault_binary, repo_root};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Renders the chart with the environment's helm and applies its ServiceAccount and RBAC for
/// release `release` in `namespace`. Returns a kubeconfig that authenticates as that
/// ServiceAccount (a bound token from the TokenRequest API), written under `dir`.
pub async fn install_chart_rbac(
    env: &TestEnv,
    admin: &kube::Client,
    namespace: &str,
    release: &str,
    dir: &Path,
) -> PathBuf {
    install_chart_rbac_with(env, admin, namespace, release, dir, &[]).await
}

/// `helm template` of the chart for `release` in `namespace` with `--set` values `sets`: the
/// rendered documents, parsed.
pub fn render_chart(
    env: &TestEnv,
    namespace: &str,
    release: &str,
    sets: &[&str],
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(env.var("HELM"));
    cmd.args(["template", release])
        .arg(repo_root().join("charts/mailvault"))
        .args(["--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("running helm template");
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// [`install_chart_rbac`] with `--set` values (e.g. `rbac.watchNamespaces={a,b}`). Only the
/// ServiceAccount and the RBAC objects are applied (the operator runs here, not in a pod).
pub async fn install_chart_rbac_with(
    env: &TestEnv,
    admin: &kube::Client,
    namespace: &str,
    release: &str,
    dir: &Path,
    sets: &[&str],
) -> PathBuf {
    let apply = PatchParams::apply("mailvault-tests").force();
    let mut service_account = None;
    for value in render_chart(env, namespace, release, sets) {
        let name = value["metadata"]["name"].as_str().expect("name").to_owned();
        // A Role may live in a watched namespace other than the release's.
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or(namespace)
            .to_owned();
        match value["kind"].as_str() {
            Some("ServiceAccount") => {
                Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
                    .patch(&name, &apply, &Patch::Apply(&value))
                    .await
                    .expect("applying the ServiceAccount");
                service_account = Some(name);
            }
            Some("ClusterRole") => {
                Api::<ClusterRole>::all(admin.clone())
                    .patch(&name, &apply, &Patch::Apply(&value))
                    .await
                    .expect("applying the ClusterRole");
            }
            Some("ClusterRoleBinding") => {
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .patch(&name, &apply, &Patch::Apply(&value))
                    .await
                    .expect("applying the ClusterRoleBinding");
            }
            Some("Role") => {
                Api::<Role>::namespaced(admin.clone(), &ns)
                    .patch(&name, &apply, &Patch::Apply(&value))
                    .await
                    .expect("applying the Role");
            }
            Some("RoleBinding") => {
                Api::<RoleBinding>::namespaced(admin.clone(), &ns)
                    .patch(&name, &apply, &Patch::Apply(&value))
                    .await
                    .expect("applying the RoleBinding");
            }
            // What runs the operator in a cluster; here it runs as a local process.
            Some("Deployment" | "Service" | "PodDisruptionBudget") => {}
            other => panic!("the chart renders an unexpected kind {other:?}"),
        }
    }
    let service_account = service_account.expect("the chart renders a ServiceAccount");
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(
            &service_account,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    // Longer than the longest benchmark: a kubeconfig token is not renewed (in a
                    // cluster the kubelet rotates the projected token file and kube-rs reloads
                    // it), and Job mode at 5,000 archives ran past an hour and lost it (401).
                    expiration_seconds: Some(6 * 3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .expect("token status")
        .token;
    let kubeconfig = dir.join("kubeconfig-operator");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": env.var("KUBE_APISERVER"),
            "certificate-authority": env.ca_path()}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator",
                                                      "namespace": namespace}}],
        "current-context": "operator"
    });
    std::fs::write(
        &kubeconfig,
        serde_json::to_vec(&config).expect("kubeconfig JSON"),
    )
    .expect("writing the operator kubeconfig");
    kubeconfig
}

/// A `mailvault operator` process; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    /// Port of its `/metrics`, `/healthz`, `/readyz`.
    pub port: u16,
    /// Its identity in the Lease.
    pub identity: String,
    /// Its log file.
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl OperatorProcess {
    /// Starts an operator watching `namespace`, competing for Lease `lease` there.
    pub fn start(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        dir: &Path,
    ) -> Self {
        Self::start_with_grace(kubeconfig, namespace, lease, identity, dir, 20)
    }

    /// Like [`Self::start`], with `--shutdown-grace` seconds.
    pub fn start_with_grace(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        dir: &Path,
        shutdown_grace: u64,
    ) -> Self {
        Self::start_with(
            kubeconfig,
            namespace,
            lease,
            identity,
            dir,
            shutdown_grace,
            &[],
            &[],
        )
    }

    /// Like [`Self::start_with_grace`], with extra arguments and environment variables.
    #[allow(clippy::too_many_arguments)] // each is a distinct knob of one process
    pub fn start_with(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        dir: &Path,
        shutdown_grace: u64,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(mailvault_binary())
            .args(["operator", "--namespace", namespace, "--lease-name", lease])
            .args(["--identity", identity, "--lease-duration", "10"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .args(["--shutdown-grace", &shutdown_grace.to_string()])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,mailvault=debug,kube=warn")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(extra_env.iter().copied())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting mailvault operator");
        Self {
            child,
            port,
            identity: identity.to_owned(),
            log,
        }
    }

    /// GET `path` from its HTTP endpoint: (status code, body), or None if it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// The value of an unlabelled metric (or a labelled one, spelled with its labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Whether it holds the lease (its `mailvault_leader` gauge).
    pub async fn is_leader(&self) -> bool {
        self.metric("mailvault_leader").await == Some(1.0)
    }

    /// Whether its process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to release the lease or finish a run.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for it to exit (at most `within`). Returns its exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
