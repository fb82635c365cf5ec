//! Archive runs in flight, one task per archive: a reconcile starts a run and returns at once;
//! the run's end re-triggers the reconcile.
//!
//! `reconcile --start--> [ RunRegistry: uid -> task ] --end--> trigger --> reconcile`
//!
//! A run of an archive never starts while another is in flight (keyed by the archive's uid, so
//! a deleted and re-created archive is a new key). Runs are tasks, not reconcile futures, so a
//! reconcile of a policy or a hold never waits behind hours of IMAP; [`RunRegistry::abort_all`]
//! abandons them (a lost lease, the end of the shutdown grace) and the next leader resumes from
//! the bucket, as after a crash.

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::crd::MailboxArchive;

/// The runs in flight.
#[derive(Debug, Default)]
pub struct RunRegistry {
    running: Mutex<HashMap<String, AbortHandle>>,
    ended: Notify,
}

/// Removes a run from the registry when its task ends, however it ends (finished, panicked,
/// aborted), and asks for a reconcile of its archive.
struct Ending {
    registry: Arc<RunRegistry>,
    key: String,
    archive: ObjectRef<MailboxArchive>,
    trigger: UnboundedSender<ObjectRef<MailboxArchive>>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
        self.registry.ended.notify_waiters();
        // The controller may be gone already (shutdown): nothing to re-trigger then.
        let _ = self.trigger.unbounded_send(self.archive.clone());
    }
}

impl RunRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a run of the archive with this uid is in flight.
    pub fn is_running(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Runs in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no run is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts `run` for the archive with this uid, unless one is in flight (then `false`).
    /// When it ends, `archive` is sent to `trigger` so the reconciler looks again.
    pub fn start(
        self: &Arc<Self>,
        uid: &str,
        archive: ObjectRef<MailboxArchive>,
        trigger: UnboundedSender<ObjectRef<MailboxArchive>>,
        run: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let mut running = self.lock();
        if running.contains_key(uid) {
            return false;
        }
        let ending = Ending {
            registry: self.clone(),
            key: uid.to_owned(),
            archive,
            trigger,
        };
        // Registered under the lock before the task can end, so its removal follows.
        let task = tokio::spawn(async move {
            let _ending = ending;
            run.await;
        });
        running.insert(uid.to_owned(), task.abort_handle());
        true
    }

    /// Waits until no run is in flight.
    pub async fn wait_all(&self) {
        loop {
            let ended = self.ended.notified();
            if self.is_empty() {
                return;
            }
            ended.await;
        }
    }

    /// Abandons every run in flight.
    pub fn abort_all(&self) {
        for task in self.lock().values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use std::time::Duration;

    #[tokio::test]
    async fn one_run_per_archive_and_its_end_triggers_a_reconcile() {
        let registry = Arc::new(RunRegistry::default());
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let chief = ObjectRef::<MailboxArchive>::new("chief").within("police");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        assert!(
            registry.start("uid-1", chief.clone(), tx.clone(), async move {
                let _ = released.await;
            })
        );
        assert!(registry.is_running("uid-1"));
        assert!(!registry.start("uid-1", chief.clone(), tx.clone(), async {}));
        release.send(()).unwrap();
        assert_eq!(rx.next().await, Some(chief));
        registry.wait_all().await;
        assert!(!registry.is_running("uid-1"));
    }

    #[tokio::test]
    async fn aborted_runs_leave_the_registry() {
        let registry = Arc::new(RunRegistry::default());
        let (tx, _rx) = futures::channel::mpsc::unbounded();
        let a = ObjectRef::<MailboxArchive>::new("a").within("police");
        assert!(registry.start("uid-a", a, tx, async {
            tokio::time::sleep(Duration::from_hours(1)).await;
        }));
        registry.abort_all();
        tokio::time::timeout(Duration::from_secs(5), registry.wait_all())
            .await
            .unwrap();
        assert!(registry.is_empty());
    }
}
