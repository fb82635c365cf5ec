//! Prometheus metrics of the operator, served on `/metrics`.

use crate::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `succeeded` or `failed`.
    pub result: String,
}

/// A label set with one `reason` label (a [`Reason`]: the word conditions and Events use).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The error's reason.
    pub reason: String,
}

/// A label set with one `kind` label (the custom resource kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `MailboxArchive`, `RetentionPolicy` or `LegalHold`.
    pub kind: String,
}

/// A label set naming one `MailboxArchive` (`archive_namespace`, not `namespace`, which scrape
/// configurations set to the operator pod's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArchiveLabel {
    /// The archive's namespace.
    pub archive_namespace: String,
    /// The archive's name.
    pub archive: String,
}

/// Every metric the operator records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Archive runs by result.
    pub runs: Family<ResultLabel, Counter>,
    /// Run durations.
    pub run_duration: Histogram,
    /// Records archived.
    pub records: Counter,
    /// Original bytes archived.
    pub bytes: Counter,
    /// Failures by reason (runs and reconciliations).
    pub errors: Family<ReasonLabel, Counter>,
    /// Reconciliations by kind.
    pub reconciliations: Family<KindLabel, Counter>,
    /// How long reconciliations take, by kind (an archive run is not part of it: it runs in
    /// its own task).
    pub reconcile_duration: Family<KindLabel, Histogram>,
    /// Runs due and waiting for a run slot (the queue depth).
    pub runs_waiting: Gauge,
    /// Runs in progress.
    pub runs_in_progress: Gauge,
    /// 1 while this replica holds the lease and runs the controllers.
    pub leader: Gauge,
    /// When each archive's last successful run ended (Unix seconds), for "not syncing" alerts.
    pub last_success: Family<ArchiveLabel, Gauge>,
    /// Messages expunged before they could be captured, by archive.
    pub capture_gaps: Family<ArchiveLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mailvault");
        let runs = Family::<ResultLabel, Counter>::default();
        registry.register("runs", "Archive runs, by result", runs.clone());
        // 1 s .. ~4.5 h: a first run of a large mailbox takes hours.
        let run_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 3.0, 10),
        );
        registry.register_with_unit(
            "run_duration",
            "Duration of archive runs",
            prometheus_client::registry::Unit::Seconds,
            run_duration.clone(),
        );
        let records = Counter::default();
        registry.register("records_archived", "Records archived", records.clone());
        let bytes = Counter::default();
        registry.register_with_unit(
            "archived",
            "Original message bytes archived",
            prometheus_client::registry::Unit::Bytes,
            bytes.clone(),
        );
        let errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "errors",
            "Failed runs and reconciliations, by reason",
            errors.clone(),
        );
        let reconciliations = Family::<KindLabel, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations, by resource kind",
            reconciliations.clone(),
        );
        let reconcile_duration =
            Family::<KindLabel, Histogram>::new_with_constructor(reconcile_buckets as fn() -> _);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconciliations, by resource kind",
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        let runs_waiting = Gauge::default();
        registry.register(
            "runs_waiting",
            "Archive runs due and waiting for a free run slot",
            runs_waiting.clone(),
        );
        let runs_in_progress = Gauge::default();
        registry.register(
            "runs_in_progress",
            "Archive runs in progress",
            runs_in_progress.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and writes",
            leader.clone(),
        );
        let last_success = Family::<ArchiveLabel, Gauge>::default();
        registry.register_with_unit(
            "archive_last_success_timestamp",
            "When the archive's last successful run ended (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            last_success.clone(),
        );
        let capture_gaps = Family::<ArchiveLabel, Counter>::default();
        registry.register(
            "capture_gaps",
            "Messages expunged from the mailbox before they could be captured",
            capture_gaps.clone(),
        );
        Self {
            registry,
            runs,
            run_duration,
            records,
            bytes,
            errors,
            reconciliations,
            reconcile_duration,
            runs_waiting,
            runs_in_progress,
            leader,
            last_success,
            capture_gaps,
        }
    }
}

/// 1 ms .. ~1 min: a reconcile is a few apiserver calls.
fn reconcile_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 3.0, 11,
    ))
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a failure of this reason.
    pub fn error(&self, reason: Reason) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts a finished run, `succeeded` or `failed`.
    pub fn run_finished(&self, result: &str) {
        self.runs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a successful run of an archive: when it ended and the capture gaps it found.
    pub fn archive_synced(&self, namespace: &str, archive: &str, ended_unix: i64, gaps: u64) {
        let label = ArchiveLabel {
            archive_namespace: namespace.to_owned(),
            archive: archive.to_owned(),
        };
        self.last_success.get_or_create(&label).set(ended_unix);
        self.capture_gaps.get_or_create(&label).inc_by(gaps);
    }

    /// Counts a reconciliation of this kind and records how long it took.
    pub fn reconciled(&self, kind: &str, took: std::time::Duration) {
        let label = KindLabel {
            kind: kind.to_owned(),
        };
        self.reconciliations.get_or_create(&label).inc();
        self.reconcile_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }
}

/// Counts one in a gauge while it lives: a run aborted mid-await (a lost lease, the end of
/// the shutdown grace) is dropped, never reaching a `dec()` written after its await.
pub struct Counted(Gauge);

impl Counted {
    /// Increments `gauge` until the returned value is dropped.
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_prefix() {
        let m = Metrics::default();
        m.run_finished("succeeded");
        m.error(Reason::SecretNotUsable);
        m.reconciled("MailboxArchive", std::time::Duration::from_millis(3));
        m.records.inc_by(3);
        m.archive_synced("police", "chief", 1_790_000_000, 2);
        let text = m.render();
        for needle in [
            "mailvault_runs_total{result=\"succeeded\"} 1",
            "mailvault_errors_total{reason=\"SecretNotUsable\"} 1",
            "mailvault_records_archived_total 3",
            "mailvault_run_duration_seconds_bucket",
            "mailvault_runs_waiting 0",
            "mailvault_leader 0",
            "mailvault_reconciliations_total{kind=\"MailboxArchive\"} 1",
            "mailvault_reconcile_duration_seconds_count{kind=\"MailboxArchive\"} 1",
            "mailvault_archived_bytes_total 0",
            "mailvault_archive_last_success_timestamp_seconds{archive_namespace=\"police\",archive=\"chief\"} 1790000000",
            "mailvault_capture_gaps_total{archive_namespace=\"police\",archive=\"chief\"} 2",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
