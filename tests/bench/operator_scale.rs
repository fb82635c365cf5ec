//! How many MailboxArchives one operator handles: creates N small archives (default 500) in one
//! namespace, all reading one small mailbox into one bucket under their own prefixes, and
//! reports the time from creation to Ready, the apiserver's request rate at steady state (with
//! a baseline measured before the operator started), and the operator's memory.
//!
//! `operator-scale [N]`; needs the environment (`tests/env/up`) and `cargo build -p mailvault`.
//! With `BENCH_RUNNER=Job` every run is a Kubernetes Job (`--default-runner Job`): the test
//! kubelet (tests/support/kubelet.rs) runs each Job's pod as a process of this build, so the
//! figures include the Job controller's and the pods' cost on the same machine.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mailvault::crd::{MailboxArchive, RetentionPolicy};
use mailvault_tests::kubelet::Kubelet;
use mailvault_tests::operator::{OperatorProcess, install_chart_rbac};
use mailvault_tests::{S3Flavour, TestEnv, apply_crds, new_namespace, unique_name};
use serde_json::json;
use std::time::{Duration, Instant};

/// Total requests the apiserver has served (`apiserver_request_total`, every label summed).
async fn apiserver_requests(admin: &kube::Client) -> f64 {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = admin.request_text(req).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Requests per second over `window`, minus the two scrapes that measure it.
async fn request_rate(admin: &kube::Client, window: Duration) -> f64 {
    let before = apiserver_requests(admin).await;
    tokio::time::sleep(window).await;
    let after = apiserver_requests(admin).await;
    (after - before - 1.0).max(0.0) / window.as_secs_f64()
}

/// The Jobs in `namespace`, and any archive with more than one (a slot run twice would
/// show here: each Job is one run).
async fn job_count(admin: &kube::Client, namespace: &str, archives: usize) -> String {
    use k8s_openapi::api::batch::v1::Job;
    use kube::ResourceExt as _;
    let jobs = Api::<Job>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("listing Jobs")
        .items;
    let mut per_archive: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for job in &jobs {
        let archive = job
            .labels()
            .get("mailvault.io/archive")
            .cloned()
            .unwrap_or_default();
        let slot = job
            .annotations()
            .get("mailvault.io/slot")
            .cloned()
            .unwrap_or_default();
        per_archive
            .entry(archive)
            .or_default()
            .push(format!("{} slot {slot}", job.name_any()));
    }
    let twice: Vec<String> = per_archive
        .into_iter()
        .filter(|(_, jobs)| jobs.len() > 1)
        .map(|(archive, jobs)| format!("{archive}: {}", jobs.join(", ")))
        .collect();
    if twice.is_empty() {
        format!("{} for {archives} archives", jobs.len())
    } else {
        format!(
            "{} for {archives} archives; more than one for {}",
            jobs.len(),
            twice.join("; ")
        )
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    apply_crds(&admin).await;
    let ns = new_namespace(&admin, "scale").await;
    let dir = std::env::temp_dir().join(unique_name("mv-scale"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let kubeconfig = install_chart_rbac(&env, &admin, &ns, &unique_name("mv"), &dir).await;

    let user = env.new_mail_user("scale");
    for i in 0..3 {
        let msg = format!("From: a@city.gov\r\nSubject: {i}\r\n\r\nbody {i}\r\n");
        env.seed_message(&user, "INBOX", msg.as_bytes(), "");
    }
    let bucket = unique_name("scale");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let apply = PatchParams::apply("operator-scale").force();
    for (name, data) in [
        ("imap", json!({"password": user.password})),
        (
            "s3",
            json!({"AWS_ACCESS_KEY_ID": env.var("VERSITYGW_ACCESS_KEY"),
                      "AWS_SECRET_ACCESS_KEY": env.var("VERSITYGW_SECRET_KEY")}),
        ),
        (
            "imap-ca",
            json!({"ca.crt": std::fs::read_to_string(env.ca_path()).expect("CA")}),
        ),
    ] {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "annotations": {"mailvault.io/allowed-archives": "*"}},
                       "stringData": data});
        secrets
            .patch(name, &apply, &Patch::Apply(&s))
            .await
            .expect("a Secret");
    }
    let policy: RetentionPolicy = serde_json::from_value(json!({
        "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "city"},
        "spec": {"defaultRule": {"recordSeries": "GS 1-03", "retain": "P1D", "disposition": "Destroy"}}
    }))
    .expect("a policy");
    Api::<RetentionPolicy>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");

    let jobs = std::env::var("BENCH_RUNNER").is_ok_and(|r| r.eq_ignore_ascii_case("job"));
    let in_flight: usize = std::env::var("BENCH_JOBS_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let runner = if jobs {
        format!("runner Job, {in_flight} Jobs in flight")
    } else {
        "in process, --concurrent-runs 4".to_owned()
    };
    println!("operator scale: {n} MailboxArchives, one operator ({runner}), namespace {ns}");
    let baseline = request_rate(&admin, Duration::from_secs(30)).await;
    let kubelet = jobs.then(|| Kubelet::start(&env, admin.clone(), &ns, &dir));
    let op = if jobs {
        let config = json!({"image": "mailvault:bench", "maxInFlight": in_flight,
                            "maxInFlightPerNamespace": in_flight,
                            "ttlSecondsAfterFinished": 3600})
        .to_string();
        OperatorProcess::start_with(
            &kubeconfig,
            &ns,
            "mailvault-operator",
            "scale",
            &dir,
            20,
            &["--default-runner", "Job", "--job-config", &config],
            &[],
        )
    } else {
        OperatorProcess::start(&kubeconfig, &ns, "mailvault-operator", "scale", &dir)
    };
    let started = Instant::now();
    while !op.is_leader().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lease: {}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // How long all may take to become Ready (`BENCH_READY_WITHIN_SECS`, default 30 min): Job
    // mode starts a process per run, about an hour for 5,000 on this machine.
    let ready_within = Duration::from_secs(
        std::env::var("BENCH_READY_WITHIN_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let archives: Api<MailboxArchive> = Api::namespaced(admin.clone(), &ns);
    let created = Instant::now();
    for i in 0..n {
        let a: MailboxArchive = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
            "metadata": {"name": format!("a{i:04}")},
            "spec": {
                "imap": {"host": env.imap_host(), "port": env.imaps_port(), "tls": "Required",
                         "username": user.name,
                         "passwordSecretRef": {"name": "imap", "key": "password"},
                         "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
                "storage": {"bucket": bucket, "region": env.var("S3_REGION"),
                            "endpoint": env.s3_endpoint(S3Flavour::Versitygw), "pathStyle": true,
                            "credentialsSecretRef": {"name": "s3"}},
                // Daily: after the first run, steady state has no runs, only reconciliation.
                "schedule": "0 3 * * *",
                "retentionPolicyRef": {"name": "city"}
            }
        }))
        .expect("an archive");
        archives
            .create(&PostParams::default(), &a)
            .await
            .expect("creating an archive");
    }
    let create_secs = created.elapsed().as_secs_f64();

    // Until every archive is Ready with its 3 records.
    let mut latencies;
    loop {
        let list = archives.list(&ListParams::default()).await.expect("list");
        latencies = Vec::new();
        for a in &list.items {
            let s = a.status.as_ref();
            let ok = s.is_some_and(|s| {
                s.totals.as_ref().is_some_and(|t| t.records == 3)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if !ok {
                continue;
            }
            let born = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let end = s
                .and_then(|s| s.last_sync.as_ref())
                .and_then(|l| l.end.parse::<jiff::Timestamp>().ok());
            if let (Some(b), Some(e)) = (born, end) {
                latencies.push(e.duration_since(b).as_secs_f64());
            }
        }
        if latencies.len() == n {
            break;
        }
        assert!(
            created.elapsed() < ready_within,
            "only {} of {n} Ready after {} s",
            latencies.len(),
            ready_within.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_ready = created.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let rss_after_runs = proc_status_kib(op.pid(), "VmRSS:");

    // Steady state: nothing due; the operator only watches and re-queues.
    tokio::time::sleep(Duration::from_secs(20)).await;
    // The test kubelet lists the namespace's Pods every 300 ms (a real one watches): its own
    // requests are counted and taken out of the operator's figure.
    let kubelet_requests = || kubelet.as_ref().map_or(0, Kubelet::requests);
    let kubelet_before = kubelet_requests();
    let steady_window = Duration::from_secs(60);
    let steady_all = request_rate(&admin, steady_window).await;
    #[allow(clippy::cast_precision_loss)]
    let steady_kubelet = (kubelet_requests() - kubelet_before) as f64 / steady_window.as_secs_f64();
    let steady = steady_all - steady_kubelet;
    let rss = proc_status_kib(op.pid(), "VmRSS:");
    let hwm = proc_status_kib(op.pid(), "VmHWM:");
    let runs = if let Some(kubelet) = &kubelet {
        #[allow(clippy::cast_precision_loss)]
        let ok = kubelet
            .finished()
            .values()
            .filter(|code| **code == Some(0))
            .count() as f64;
        ok
    } else {
        op.metric("mailvault_runs_total{result=\"succeeded\"}")
            .await
            .unwrap_or(0.0)
    };

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| archives | {n} |");
    println!("| creating them (apiserver, sequential) | {create_secs:.1} s |");
    println!("| all Ready (first run of each done) | {all_ready:.1} s after the first create |");
    println!(
        "| creation -> first run done: p50 / p95 / max | {:.1} s / {:.1} s / {:.1} s |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 1.0)
    );
    println!(
        "| runs that succeeded | {runs}{} |",
        if jobs {
            " (Job pods that exited 0)"
        } else {
            ""
        }
    );
    println!("| apiserver requests/s, baseline (no operator) | {baseline:.2} |");
    if jobs {
        println!(
            "| apiserver requests/s, steady state with the operator | {steady:.2} (and \
             {steady_kubelet:.2} from the test kubelet's polling, not counted) |"
        );
        println!("| Jobs created | {} |", job_count(&admin, &ns, n).await);
    } else {
        println!("| apiserver requests/s, steady state with the operator | {steady:.2} |");
    }
    println!(
        "| operator RSS after the first runs / steady / peak | {} / {} / {} MiB |",
        rss_after_runs / 1024,
        rss / 1024,
        hwm / 1024
    );
}
