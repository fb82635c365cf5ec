//! A test kubelet: the local environment has kube-controller-manager (the Job controller
//! creates real Pods) but no scheduler and no kubelet. This loop plays both for one namespace:
//! it binds each new Pod to a node (the `pods/binding` subresource, as the scheduler does),
//! runs its container's command on this machine with the Pod's environment and a token of the
//! Pod's ServiceAccount, then reports the phase (`pods/status`) as a kubelet does. So the Job,
//! its Pods, the token and the permissions are the real ones; only the container is a process.
//!
//! What differs from a kubelet, on purpose:
//! - the image is not pulled: a command whose program is `mailvault` runs this build's binary;
//! - volumes are directories under the test's directory, and every argument or environment
//!   value that starts with a volume's `mountPath` is rewritten to that directory;
//! - the ServiceAccount token (TokenRequest, bound to the Pod, as a kubelet asks for it) is
//!   handed over as a kubeconfig (`KUBECONFIG`) next to the usual files (`token`, `ca.crt`,
//!   `namespace`): kube-rs reads the in-cluster token only from the fixed path
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, which a test cannot give each Pod, and
//!   `kube::Client::try_default()` prefers `KUBECONFIG` when it is set. The identity is the same.

use crate::{TestEnv, mailvault_binary};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The node every Pod is bound to.
pub const NODE: &str = "mailvault-test-node";

#[derive(Default)]
struct State {
    /// Pods whose process runs, by name.
    running: HashMap<String, Child>,
    /// Pods this kubelet has started (a Pod runs once).
    started: HashSet<String>,
    /// Pods to kill (SIGKILL) at the next turn of the loop.
    kill: HashSet<String>,
    /// Exit codes of finished Pods, by name (None: killed by a signal).
    finished: HashMap<String, Option<i32>>,
    /// Pods still to fail at start, as a node that cannot start a container does.
    refuse: usize,
    /// While true, bound Pods wait (a node that is slow to start containers).
    held: bool,
    /// Requests this loop has sent to the apiserver (a benchmark subtracts them: a real
    /// kubelet watches instead of listing every 300 ms).
    requests: u64,
}

/// The loop, for one namespace; stopped (and its processes killed) when dropped.
pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    /// Where each Pod's directory (volumes, token, log) is.
    pub dir: PathBuf,
}

impl Kubelet {
    /// Starts playing the kubelet for Pods of `namespace`, with the admin client (it binds Pods,
    /// requests tokens and writes Pod status, as the scheduler and a node would).
    pub fn start(env: &TestEnv, admin: kube::Client, namespace: &str, dir: &Path) -> Self {
        let dir = dir.join("kubelet");
        std::fs::create_dir_all(&dir).expect("kubelet directory");
        let state = Arc::new(Mutex::new(State::default()));
        let looping = Looping {
            pods: Api::namespaced(admin.clone(), namespace),
            accounts: Api::namespaced(admin, namespace),
            server: env.var("KUBE_APISERVER").to_owned(),
            ca: env.ca_path().to_owned(),
            namespace: namespace.to_owned(),
            dir: dir.clone(),
            state: state.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = looping.turn().await {
                    eprintln!("test kubelet: {e}");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self { state, task, dir }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests the loop has sent to the apiserver so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Pods whose process runs now.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().running.keys().cloned().collect();
        names.sort();
        names
    }

    /// Pods that have finished, with their exit codes (None: killed).
    pub fn finished(&self) -> HashMap<String, Option<i32>> {
        self.lock().finished.clone()
    }

    /// Kills Pod `name`'s process with SIGKILL, as a node that dies or an OOM kill would.
    pub fn kill(&self, name: &str) {
        self.lock().kill.insert(name.to_owned());
    }

    /// The next `n` Pods fail at start, without running (a container that cannot start).
    pub fn refuse_next(&self, n: usize) {
        self.lock().refuse = n;
    }

    /// Bound Pods wait until [`Self::release`].
    pub fn hold(&self) {
        self.lock().held = true;
    }

    /// Pods start again.
    pub fn release(&self) {
        self.lock().held = false;
    }

    /// The log (stdout and stderr) of Pod `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name).join("log")).unwrap_or_default()
    }

    /// Every Pod's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = self.lock().started.iter().cloned().collect();
        names.sort();
        for name in names {
            let log = self.log(&name);
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            out.push_str(&format!(
                "--- pod {name} ---\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        for child in self.lock().running.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Looping {
    pods: Api<Pod>,
    accounts: Api<ServiceAccount>,
    server: String,
    ca: PathBuf,
    namespace: String,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

type TurnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl Looping {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count_request(&self) {
        self.lock().requests += 1;
    }

    async fn turn(&self) -> TurnResult {
        self.count_request();
        // Only Pods not yet finished, as a node lists only what it still has to run: finished
        // Pods stay as long as their Jobs (an hour in the benchmark), thousands of them.
        let unfinished =
            ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let pods = self.pods.list(&unfinished).await?.items;
        let present: HashSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for pod in &pods {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if !bound {
                self.bind(&name).await?;
                continue;
            }
            let (started, held) = {
                let state = self.lock();
                (state.started.contains(&name), state.held)
            };
            if !started && !held && pod.metadata.deletion_timestamp.is_none() {
                let refused = {
                    let mut state = self.lock();
                    state.started.insert(name.clone());
                    let refused = state.refuse > 0;
                    state.refuse = state.refuse.saturating_sub(1);
                    refused
                };
                let started = if refused {
                    Err("refused by the test (refuse_next)".into())
                } else {
                    self.run(pod, &name).await
                };
                match started {
                    Ok(child) => {
                        self.lock().running.insert(name.clone(), child);
                        self.phase(&name, "Running", None).await?;
                    }
                    Err(e) => {
                        std::fs::create_dir_all(self.dir.join(&name))?;
                        std::fs::write(self.dir.join(&name).join("log"), e.to_string())?;
                        self.lock().finished.insert(name.clone(), Some(128));
                        self.phase(&name, "Failed", Some(128)).await?;
                    }
                }
            }
        }
        // Kills asked for, Pods deleted under their process, and processes that ended.
        let mut ended: Vec<(String, Option<i32>)> = Vec::new();
        {
            let mut state = self.lock();
            let kill: Vec<String> = state.kill.drain().collect();
            for name in kill {
                if let Some(child) = state.running.get_mut(&name) {
                    let _ = child.kill();
                }
            }
            let names: Vec<String> = state.running.keys().cloned().collect();
            for name in names {
                if !present.contains(&name)
                    && let Some(child) = state.running.get_mut(&name)
                {
                    let _ = child.kill();
                }
                let exited = state
                    .running
                    .get_mut(&name)
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    state.running.remove(&name);
                    state.finished.insert(name.clone(), status.code());
                    if present.contains(&name) {
                        ended.push((name, status.code()));
                    }
                }
            }
        }
        for (name, code) in ended {
            let phase = if code == Some(0) {
                "Succeeded"
            } else {
                "Failed"
            };
            // A signal's exit code, as a container runtime reports it (SIGKILL: 137).
            self.phase(&name, phase, Some(code.unwrap_or(137))).await?;
        }
        Ok(())
    }

    /// What the scheduler does: a Binding to the node.
    async fn bind(&self, name: &str) -> TurnResult {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": self.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
        });
        let body = serde_json::to_vec(&binding)?;
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{}/pods/{name}/binding",
            self.namespace
        ))
        .header("content-type", "application/json")
        .body(body)?;
        // A Pod bound meanwhile answers 409: nothing to do.
        self.count_request();
        let _ = self.pods.clone().into_client().request_text(request).await;
        Ok(())
    }

    /// Writes the Pod's phase (and its container's state) through `pods/status`.
    async fn phase(&self, name: &str, phase: &str, exit_code: Option<i32>) -> TurnResult {
        let now = jiff::Timestamp::now().to_string();
        let state = match exit_code {
            None => json!({"running": {"startedAt": now}}),
            Some(code) => json!({"terminated": {"exitCode": code, "finishedAt": now,
                                 "reason": if code == 0 { "Completed" } else { "Error" }}}),
        };
        self.count_request();
        let pod = self.pods.get(name).await?;
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .unwrap_or_default();
        let status = json!({"status": {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": pod.status.as_ref().and_then(|s| s.start_time.clone()).map_or(now.clone(), |t| t.0.to_string()),
            "containerStatuses": [{"name": container.0, "image": container.1, "imageID": "",
                                   "ready": exit_code.is_none(), "restartCount": 0,
                                   "started": exit_code.is_none(), "state": state}]
        }});
        self.count_request();
        self.pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    /// Starts the Pod's (first) container as a process.
    async fn run(
        &self,
        pod: &Pod,
        name: &str,
    ) -> Result<Child, Box<dyn std::error::Error + Send + Sync>> {
        let spec = pod.spec.as_ref().ok_or("a Pod without a spec")?;
        let container = spec.containers.first().ok_or("a Pod without a container")?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        // Volumes: one directory each; a value under a mountPath points into it.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let host = dir.join("volumes").join(&m.name);
            std::fs::create_dir_all(&host)?;
            mounts.push((m.mount_path.clone(), host));
        }
        let rewrite = |value: &str| -> String {
            for (mount, host) in &mounts {
                if let Some(rest) = value.strip_prefix(mount.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{}{rest}", host.display());
                }
                if let Some((flag, path)) = value.split_once('=')
                    && let Some(rest) = path.strip_prefix(mount.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{flag}={}{rest}", host.display());
                }
            }
            value.to_owned()
        };
        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        let program = argv.first().ok_or("a container without a command")?;
        if Path::new(program).file_name().and_then(|n| n.to_str()) != Some("mailvault") {
            return Err(format!("the test kubelet runs only mailvault, not {program}").into());
        }
        // The ServiceAccount's token, bound to this Pod, as a kubelet requests it.
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        self.count_request();
        let token = self
            .accounts
            .create_token_request(
                &account,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        audiences: vec![],
                        expiration_seconds: Some(3600),
                        bound_object_ref: Some(BoundObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Pod".into()),
                            name: Some(name.to_owned()),
                            uid: pod.metadata.uid.clone(),
                        }),
                    },
                    ..Default::default()
                },
            )
            .await?
            .status
            .ok_or("TokenRequest without a status")?
            .token;
        let sa_dir = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa_dir)?;
        std::fs::write(sa_dir.join("token"), &token)?;
        std::fs::copy(&self.ca, sa_dir.join("ca.crt"))?;
        std::fs::write(sa_dir.join("namespace"), &self.namespace)?;
        let kubeconfig = sa_dir.join("kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.server, "certificate-authority": sa_dir.join("ca.crt")}}],
            "users": [{"name": "pod", "user": {"tokenFile": sa_dir.join("token")}}],
            "contexts": [{"name": "pod", "context": {"cluster": "in-cluster", "user": "pod",
                                                     "namespace": self.namespace}}],
            "current-context": "pod"
        });
        std::fs::write(&kubeconfig, serde_json::to_vec(&config)?)?;

        let log = std::fs::File::create(dir.join("log"))?;
        let mut cmd = Command::new(mailvault_binary());
        cmd.args(argv.iter().skip(1).map(|a| rewrite(a)))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("TMPDIR", &dir)
            .env("HOSTNAME", name)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env(
                "KUBERNETES_SERVICE_PORT",
                self.server.rsplit(':').next().unwrap_or("443"),
            );
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => rewrite(v),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.name") => name.to_owned(),
                        Some("metadata.namespace") => self.namespace.clone(),
                        Some("spec.serviceAccountName") => account.clone(),
                        other => {
                            return Err(format!("the test kubelet cannot resolve {other:?}").into());
                        }
                    }
                }
                (None, None) => String::new(),
            };
            cmd.env(&e.name, value);
        }
        cmd.stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null());
        Ok(cmd.spawn()?)
    }
}
