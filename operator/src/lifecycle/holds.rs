//! Legal holds carried out on an archive: the S3 legal-hold flag set or cleared on each record,
//! then `hold-placed` / `hold-released` logged, through the archive's one writer.
//!
//! `LegalHold specs (CRs, or the CLI's file) + state/holds.json --core hold_plan--> per record:
//!  set_legal_hold, then RecordWriter::append; checkpoint; state/holds.json`
//!
//! The holds in force live in the archive's store (`state/holds.json`, MAC'd like the cursor),
//! each with the log position through which every record was judged, so that:
//! - a run holds the records it just archived ("present and future") by reading only those;
//! - the CLI, which has no cluster to ask, knows the holds `mailvault hold` placed;
//! - a hold edited since it was applied (another fingerprint) is judged on every record again.
//!
//! A hold given by the caller wins over the state's of the same id. A released hold leaves the
//! state once no record holds it any more. A state without the writer's MAC counts as absent
//! (and is reported): every given hold is then judged on every record again.

use super::stored;
use crate::crd::LegalHoldSpec;
use crate::store::Store;
use crate::writer::{RecordWriter, trust};
use crate::{Error, Result};
use mailvault_core::layout::HOLDS_STATE_KEY;
use mailvault_core::lifecycle::Replay;
use mailvault_core::lifecycle::holds::{DateRange, Hold, HoldPlan, hold_plan};
use mailvault_core::mac::{MacKey, MacKind};
use mailvault_core::{Hash, UnixTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Largest `state/holds.json` read (a hold may list 10,000 record ids).
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// A hold as given to a run: its id in the log and its `LegalHold` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GivenHold {
    /// `namespace/name` of the `LegalHold`.
    pub id: String,
    /// What it holds.
    pub spec: LegalHoldSpec,
}

/// One hold in `state/holds.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StateHold {
    #[serde(flatten)]
    hold: GivenHold,
    /// [`fingerprint`] of the spec as applied.
    fingerprint: String,
    /// Every record ingested before this log position was judged under this spec.
    applied_through: u64,
}

/// `state/holds.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HoldsState {
    holds: Vec<StateHold>,
}

/// How `state/holds.json` was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Read and authentic (or never written).
    Trusted,
    /// Present but not the writer's: reported, and treated as empty.
    Forged,
    /// Absent now, but older versions exist: someone deleted it.
    Deleted,
}

impl HoldsState {
    /// The state, or an empty one when absent, deleted or not the writer's.
    async fn load<S: Store>(store: &S, mac: &MacKey) -> Result<(Self, Found)> {
        let Some(object) = read_capped(store, HOLDS_STATE_KEY).await? else {
            // One LIST, only when the state is absent: a state that was written and is now
            // gone was deleted (by someone with write access to the bucket, not by mailvault).
            let versions = store.list_version_ids(HOLDS_STATE_KEY).await?;
            let written = versions
                .iter()
                .any(|(key, _, marker)| key == HOLDS_STATE_KEY && !marker);
            let found = if written {
                Found::Deleted
            } else {
                Found::Trusted
            };
            return Ok((Self::default(), found));
        };
        if !trust::authentic(mac, MacKind::State, HOLDS_STATE_KEY, &object) {
            return Ok((Self::default(), Found::Forged));
        }
        Ok(serde_json::from_slice(&object.bytes).map_or_else(
            |_| (Self::default(), Found::Forged),
            |s| (s, Found::Trusted),
        ))
    }

    async fn save<S: Store>(&self, store: &S, mac: &MacKey) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::encoding(HOLDS_STATE_KEY, e))?;
        let metadata = trust::tagged(mac, MacKind::State, HOLDS_STATE_KEY, &bytes);
        store.put_mutable(HOLDS_STATE_KEY, bytes, &metadata).await
    }
}

/// A small state object, refused past [`MAX_STATE_BYTES`] (anyone who can write the bucket
/// could put a huge one there).
pub(crate) async fn read_capped<S: Store>(
    store: &S,
    key: &str,
) -> Result<Option<crate::store::StoredObject>> {
    let mut bytes = Vec::new();
    let mut sink = |piece: &[u8]| -> Result<()> {
        if bytes.len() as u64 + piece.len() as u64 > MAX_STATE_BYTES {
            return Err(Error::Conflict(format!(
                "{key} is larger than {MAX_STATE_BYTES} bytes: not the writer's"
            )));
        }
        bytes.extend_from_slice(piece);
        Ok(())
    };
    let Some(digest) = store.read_streaming(key, None, &mut sink).await? else {
        return Ok(None);
    };
    Ok(Some(crate::store::StoredObject {
        bytes,
        sidecar: digest.sidecar,
        version_id: digest.version_id,
    }))
}

/// SHA-256 over what decides which records a hold covers: match, date range, record ids,
/// released (not its reason, case or archives).
pub fn fingerprint(spec: &LegalHoldSpec) -> Hash {
    let decisive = serde_json::json!({
        "match": spec.matcher,
        "dateRange": spec.date_range,
        "recordIds": spec.record_ids,
        "released": spec.released,
    });
    Hash::of(decisive.to_string().as_bytes())
}

/// An RFC 3339 date (`2026-01-31`: the whole day, UTC) or date-time, as the first (`end:
/// false`) or last instant it names.
pub fn date_bound(text: &str, end: bool) -> std::result::Result<UnixTime, String> {
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && text.len() == 10
    {
        let start = date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| format!("{text:?}: {e}"))?
            .timestamp()
            .as_second();
        return Ok(UnixTime(if end { start + 86_399 } else { start }));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| UnixTime(t.as_second()))
        .map_err(|e| format!("{text:?} is not an RFC 3339 date or date-time: {e}"))
}

/// The core's hold for a spec, judged from log position `from_index` on.
pub fn to_hold(given: &GivenHold, from_index: u64) -> std::result::Result<Hold, String> {
    let spec = &given.spec;
    let matcher = spec
        .matcher
        .as_ref()
        .map(crate::crd::RecordMatch::to_matcher)
        .transpose()
        .map_err(|e| format!("match: {e}"))?;
    let dates = spec
        .date_range
        .as_ref()
        .map(|d| {
            Ok::<_, String>(DateRange {
                from: d
                    .from
                    .as_deref()
                    .map(|t| date_bound(t, false))
                    .transpose()?,
                to: d.to.as_deref().map(|t| date_bound(t, true)).transpose()?,
            })
        })
        .transpose()
        .map_err(|e| format!("dateRange: {e}"))?;
    Ok(Hold {
        id: given.id.clone(),
        matcher,
        dates,
        record_ids: spec.record_ids.iter().cloned().collect(),
        released: spec.released,
        from_index,
    })
}

/// What applying the holds did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldsOutcome {
    /// `hold-placed` entries logged.
    pub placed: u64,
    /// `hold-released` entries logged.
    pub released: u64,
    /// Per hold (given or in the state): records it holds now.
    pub held: BTreeMap<String, u64>,
    /// Records held by any hold.
    pub held_records: u64,
    /// Records a hold needed to read but could not (left as they were; judged again next run).
    pub unreadable: u64,
    /// Records a hold covers whose destruction was already authorized or done.
    pub past_holding: u64,
    /// Holds that could not be applied, with why.
    pub invalid: Vec<String>,
    /// Holds in force in the log that neither the caller nor the state named: records each
    /// still holds (kept, but no new record is judged against them).
    pub unknown: BTreeMap<String, u64>,
    /// `state/holds.json` is gone although it was written before (its older versions remain):
    /// deleted from the bucket.
    pub state_deleted: bool,
}

impl HoldsOutcome {
    /// One line for a run summary, or `None` when no hold is known.
    pub fn summary(&self) -> Option<String> {
        if self.held.is_empty()
            && self.placed == 0
            && self.released == 0
            && self.unknown.is_empty()
            && !self.state_deleted
        {
            return None;
        }
        let mut s = format!(
            "legal holds: {} records held ({} hold-placed, {} hold-released logged)",
            self.held_records, self.placed, self.released
        );
        if self.unreadable > 0 {
            let _ = write!(
                s,
                "; {} records could not be read to judge them (retried next run)",
                self.unreadable
            );
        }
        if self.past_holding > 0 {
            let _ = write!(
                s,
                "; {} matching records were already being destroyed and are not held",
                self.past_holding
            );
        }
        for i in &self.invalid {
            let _ = write!(s, "; not applied: {i}");
        }
        if self.state_deleted {
            let _ = write!(
                s,
                "; {HOLDS_STATE_KEY} was deleted from the bucket (its older versions remain): the holds it remembered are lost to this run"
            );
        }
        if !self.unknown.is_empty() {
            let ids: Vec<String> = self
                .unknown
                .iter()
                .map(|(id, n)| format!("{id} ({n} records)"))
                .collect();
            let _ = write!(
                s,
                "; in force in the log but not given to this run: {}; the records stay held, but new mail is not judged against them until each hold is given again (mailvault hold --hold FILE, or its LegalHold)",
                ids.join(", ")
            );
        }
        Some(s)
    }
}

/// Whether a run has holds to apply: some are given, or the state remembers some (whose
/// release must be applied), or the state is not the writer's (reported by [`apply_holds`]).
pub async fn holds_due<S: Store>(store: &S, mac: &MacKey, given: &[GivenHold]) -> Result<bool> {
    if !given.is_empty() {
        return Ok(true);
    }
    let (state, found) = HoldsState::load(store, mac).await?;
    Ok(found != Found::Trusted || !state.holds.is_empty())
}

/// Applies the holds in the state and `given` to the archive whose log is `replay` (loaded
/// after the writer's last checkpoint): flags first, then entries, then a checkpoint, then
/// the state.
pub async fn apply_holds<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    replay: &Replay,
    given: &[GivenHold],
    now: UnixTime,
) -> Result<HoldsOutcome> {
    let mac = writer.mac().clone();
    let (state, found) = HoldsState::load(store, &mac).await?;
    if found == Found::Forged {
        writer.report_unauthenticated(HOLDS_STATE_KEY);
    }
    // id -> (hold, applied through), the given ones winning.
    let mut merged: BTreeMap<String, (GivenHold, u64)> = state
        .holds
        .into_iter()
        .map(|h| {
            let through = if h.fingerprint == fingerprint(&h.hold.spec).to_hex() {
                h.applied_through
            } else {
                0
            };
            (h.hold.id.clone(), (h.hold, through))
        })
        .collect();
    for g in given {
        let through = match merged.get(&g.id) {
            Some((old, through)) if fingerprint(&old.spec) == fingerprint(&g.spec) => *through,
            _ => 0,
        };
        merged.insert(g.id.clone(), (g.clone(), through));
    }
    let mut outcome = HoldsOutcome::default();
    let mut holds = Vec::new();
    for (given, through) in merged.values() {
        match to_hold(given, *through) {
            Ok(h) => holds.push(h),
            Err(e) => outcome.invalid.push(format!("{}: {e}", given.id)),
        }
    }
    let wanted: Vec<_> = replay
        .histories()
        .filter(|h| h.authorized.is_none() && h.destroyed.is_none())
        .filter(|h| holds.iter().any(|hold| hold.wants_facts_of(h)))
        .collect();
    let facts = stored::facts_of(store, wanted).await?;
    let plan: HoldPlan = hold_plan(replay.histories(), &holds, &facts);
    for change in &plan.changes {
        // The store first: the entry says what is already true.
        if let Some(on) = change.flag {
            store
                .set_legal_hold(&change.object_key, &change.object_version, on)
                .await?;
        }
        for entry in &change.entries {
            writer
                .append(change.record.clone(), entry.clone(), now)
                .await?;
        }
    }
    writer.checkpoint().await?;
    outcome.placed = plan.placed() as u64;
    outcome.released = plan.released() as u64;
    outcome.held.clone_from(&plan.held);
    outcome.held_records = plan.held_records;
    outcome.unreadable = plan.unreadable;
    outcome.past_holding = plan.past_holding;
    outcome.unknown.clone_from(&plan.unknown);
    outcome.state_deleted = found == Found::Deleted;
    if outcome.state_deleted || !outcome.unknown.is_empty() {
        tracing::warn!(
            state_deleted = outcome.state_deleted,
            unknown = ?outcome.unknown,
            "legal holds in force in the log were not given to this run: they keep what they hold, new mail is not judged against them"
        );
    }
    // Every record ingested before the replay's end was judged, unless some could not be read.
    let judged_through = replay.size();
    let next = HoldsState {
        holds: merged
            .into_values()
            .filter(|(g, _)| !(g.spec.released && plan.held.get(&g.id) == Some(&0)))
            .map(|(g, through)| {
                let needs_facts = holds
                    .iter()
                    .find(|h| h.id == g.id)
                    .is_none_or(Hold::needs_facts);
                StateHold {
                    fingerprint: fingerprint(&g.spec).to_hex(),
                    applied_through: if plan.unreadable > 0 && needs_facts {
                        through
                    } else {
                        judged_through
                    },
                    hold: g,
                }
            })
            .collect(),
    };
    next.save(store, &mac).await?;
    Ok(outcome)
}

/// A `kind: LegalHold` document (what `kubectl apply` takes) as the hold a run applies; its id
/// is `namespace/name` from its metadata (namespace `default` when absent, as kubectl would).
pub fn hold_from_yaml(text: &str) -> Result<GivenHold> {
    let usage = |e: String| Error::Usage(format!("legal hold: {e}"));
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| usage(e.to_string()))?;
    let field = |k: &str| value.get(k).and_then(serde_norway::Value::as_str);
    let expected = format!("{}/v1alpha1", crate::crd::GROUP);
    if field("kind") != Some("LegalHold") || field("apiVersion") != Some(&expected) {
        return Err(usage(format!(
            "expected a document with apiVersion: {expected} and kind: LegalHold"
        )));
    }
    let hold: crate::crd::LegalHold =
        serde_norway::from_value(value).map_err(|e| usage(e.to_string()))?;
    hold.spec
        .validate()
        .map_err(|problems| usage(problems.join("; ")))?;
    let name = hold
        .metadata
        .name
        .clone()
        .ok_or_else(|| usage("metadata.name is missing".into()))?;
    let namespace = hold
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let given = GivenHold {
        id: format!("{namespace}/{name}"),
        spec: hold.spec,
    };
    to_hold(&given, 0).map_err(usage)?;
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_bounds_cover_whole_days_in_utc() {
        assert_eq!(
            date_bound("2026-01-31", false).unwrap(),
            UnixTime::parse("2026-01-31T00:00:00Z").unwrap()
        );
        assert_eq!(
            date_bound("2026-01-31", true).unwrap(),
            UnixTime::parse("2026-01-31T23:59:59Z").unwrap()
        );
        assert_eq!(
            date_bound("2026-01-31T10:00:00-06:00", true).unwrap(),
            UnixTime::parse("2026-01-31T16:00:00Z").unwrap()
        );
        assert!(date_bound("yesterday", false).is_err());
    }

    #[test]
    fn a_hold_document_reads_like_the_resource() {
        let g = hold_from_yaml(
            "apiVersion: mailvault.io/v1alpha1\nkind: LegalHold\nmetadata: {name: prr-17, namespace: police}\n\
             spec:\n  reason: records request\n  caseReference: PRR-17\n  archives: {names: [chief]}\n\
             \x20 match: {from: [\"chief@city.gov\"]}\n  dateRange: {from: \"2026-01-01\"}\n",
        )
        .unwrap();
        assert_eq!(g.id, "police/prr-17");
        let h = to_hold(&g, 0).unwrap();
        assert!(h.needs_facts() && !h.released);
        let mut released = g.clone();
        released.spec.released = true;
        assert_ne!(fingerprint(&g.spec), fingerprint(&released.spec));
        let mut reworded = g.clone();
        reworded.spec.reason = "another reason".into();
        assert_eq!(fingerprint(&g.spec), fingerprint(&reworded.spec));
        assert!(
            hold_from_yaml("kind: RetentionPolicy\napiVersion: mailvault.io/v1alpha1\n").is_err()
        );
    }
}
