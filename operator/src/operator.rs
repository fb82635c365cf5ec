//! `mailvault operator`: leader election, the controllers, and the HTTP endpoints.
//!
//! `[ Lease ] --leader--> controllers --> run tasks`; `/metrics /healthz /readyz` always.
//!
//! Every replica serves the endpoints and competes for the Lease; only the holder runs the
//! controllers, so only the holder writes records, logs and status. A replica that loses the
//! lease drops its controllers at once (a run cut short resumes from the bucket, like a crash).

use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use crate::{Error, Result};
use kube_lease_manager::LeaseManagerBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Controller settings.
    pub settings: Settings,
    /// Name of the coordination Lease.
    pub lease_name: String,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Seconds a lease lasts without renewal; a killed leader is replaced after at most this.
    pub lease_duration: u64,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// How long a shutdown waits for runs in flight before abandoning them (safe: the next
    /// leader resumes from the bucket).
    pub shutdown_grace: Duration,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(config: OperatorConfig) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Io {
            path: format!("listening on {}", config.listen),
            source,
        })?;
    tracing::info!(listen = %config.listen, "serving /metrics, /healthz, /readyz");
    tokio::spawn(serve(listener, metrics.clone(), ready.clone()));

    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.settings.instance)
        .with_duration(config.lease_duration)
        .with_grace(config.lease_duration.div_ceil(3).max(1))
        // One field manager per replica: server-side apply then refuses a second replica's
        // claim on a held lease as a conflict. A shared manager would let both "win" (the
        // failover test caught exactly that).
        .with_field_manager(format!(
            "{}-{}",
            controller::FIELD_MANAGER,
            config.settings.instance
        ))
        .build()
        .await
        .map_err(|e| Error::LeaderElection {
            message: "cannot start".into(),
            source: Some(Box::new(e)),
        })?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Release);
    tracing::info!(identity = %config.settings.instance, lease = %config.lease_name,
        namespace = %config.lease_namespace, "waiting for the lease");

    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            held = leader.wait_for(|held| *held) => {
                if held.is_err() {
                    return Err(Error::LeaderElection {
                        message: "stopped".into(),
                        source: None,
                    });
                }
            }
        }
        tracing::info!(identity = %config.settings.instance, "lease acquired: running the controllers");
        metrics.leader.set(1);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let settings = config.settings.clone();
        let (client, metrics_for_run) = (client.clone(), metrics.clone());
        let mut controllers = Box::pin(async move {
            controller::run(client, metrics_for_run, &settings, stopped).await;
        });
        let shutting_down = tokio::select! {
            () = &mut controllers => false,
            _ = leader.wait_for(|held| !*held) => {
                tracing::warn!("lease lost: stopping the controllers now");
                false
            }
            () = &mut shutdown => true,
        };
        metrics.leader.set(0);
        if shutting_down {
            tracing::info!(grace = ?config.shutdown_grace, "shutting down: letting runs in flight finish");
            let _ = stop.send(true);
            if tokio::time::timeout(config.shutdown_grace, &mut controllers)
                .await
                .is_err()
            {
                tracing::warn!(
                    "runs still in flight after the grace period: abandoned, the next leader resumes them"
                );
            }
            break;
        }
    }
    ready.store(false, Ordering::Release);
    // Closing the channel makes the lease task release the lease, so a standby takes over at
    // once instead of after the lease expires.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        other => tracing::warn!(?other, "lease not released; it expires on its own"),
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the HTTP endpoint stopped");
    }
}
