//! A records officer's `Extended` decision on a review batch: keep the batch until a new date.
//!
//! `Approval (the batch) x extendUntil x recordsDigest x Replay --extension_decision-->
//!  Refused | Stale | Extend(records: lock extended, then retention-extended logged)`
//!
//! The batch is checked exactly as an approval is ([`batch_digest`]): its records as the log
//! tells them now must be the ones the officer saw. A record this decision already extended
//! (its retain-until is `extendUntil`) stays in the batch, so a run that crashed half way, or
//! a later run, finds the same batch and only extends what is left. Once extended, a record is
//! retained until `extendUntil` and falls due again then, in a new batch (a new review).

use super::policy_edit::Extension;
use super::{Approval, RecordHistory, Replay, batch_digest, record_id};
use crate::entry::RetainUntil;
use crate::hash::Hash;
use crate::time::UnixTime;

/// An `Extended` review as the core takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOrder {
    /// The batch (series, retain-until range, log size) and who decided.
    pub batch: Approval,
    /// `recordsDigest` of the review.
    pub records_digest: Hash,
    /// Keep the batch until then.
    pub extend_until: UnixTime,
}

/// What to do with an `Extended` review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionDecision {
    /// `extendUntil` does not lengthen the batch's retention: nothing is done.
    Refused(String),
    /// The batch's records are no longer the ones the officer saw: nothing is done, the batch
    /// is reviewed again.
    Stale,
    /// Extend these records (lock first, then the entry); `already` were extended earlier.
    Extend {
        /// Records whose lock and retain-until are still short of `extendUntil`.
        records: Vec<Extension>,
        /// Records of the batch already retained until `extendUntil`.
        already: u64,
    },
}

impl ExtensionOrder {
    /// Whether the record is in the batch: covered by it, or already extended by this order.
    fn in_batch(&self, h: &RecordHistory<'_>) -> bool {
        self.batch.covers(h)
            || (h.series == self.batch.series
                && h.ingest_index < self.batch.ingested_before
                && h.retain_until == RetainUntil::Until(self.extend_until))
    }
}

/// Decides what an `Extended` review does to the log's records.
pub fn extension_decision(replay: &Replay, order: &ExtensionOrder) -> ExtensionDecision {
    if order.extend_until <= order.batch.latest {
        return ExtensionDecision::Refused(format!(
            "extendUntil {} is not after the batch's latest retain-until {}: a retention can \
             only be lengthened; nothing was extended",
            order.extend_until, order.batch.latest
        ));
    }
    if batch_digest(replay, |h| order.in_batch(h)) != order.records_digest {
        return ExtensionDecision::Stale;
    }
    let mut records = Vec::new();
    let mut already = 0;
    let target = RetainUntil::Until(order.extend_until);
    for h in replay.histories().filter(|h| order.in_batch(h)) {
        if h.authorized.is_some() || h.destroyed.is_some() {
            continue;
        }
        if h.retain_until == target {
            already += 1;
        } else {
            records.push(Extension {
                record: record_id(h.record),
                object_key: h.object_key.clone().into_owned(),
                object_version: h.object_version.to_owned(),
                retain_until: target,
            });
        }
    }
    ExtensionDecision::Extend { records, already }
}
