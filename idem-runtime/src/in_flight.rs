//! Coalescing of twins inside one process: one claim per key at a time.
//!
//! A burst of retries with one key would otherwise take one pooled connection each, all of them
//! blocked on the same unique-index entry. Instead the first becomes the leader and claims the
//! key in the database; the others wait here without a connection and then answer from the
//! record the leader committed, which it hands them (or, if the leader rolled back, lead
//! themselves).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use uuid::Uuid;

use crate::backend::KeyRecord;

/// What a leader leaves its followers: the record it committed or replayed, if it has one.
type Finished = Option<Arc<KeyRecord>>;

/// The keys this process is claiming right now, by entity id (which names the
/// tenant, operation and key at once).
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlightClaims {
    leaders: Arc<Mutex<HashMap<Uuid, watch::Receiver<Finished>>>>,
}

/// What [`InFlightClaims::lead_or_follow`] decided.
pub(crate) enum Turn {
    /// This request claims the key; others wait until the guard drops.
    Lead(Leadership),
    /// Another request of this process is claiming the key; see [`leader_finished`].
    Follow(watch::Receiver<Finished>),
}

/// Held by the leader; dropping it (on success, error, panic or cancellation) wakes the followers.
pub(crate) struct Leadership {
    claims: InFlightClaims,
    id: Uuid,
    done: watch::Sender<Finished>,
}

impl InFlightClaims {
    pub(crate) fn lead_or_follow(&self, id: Uuid) -> Turn {
        let mut leaders = self.leaders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(leader) = leaders.get(&id) {
            return Turn::Follow(leader.clone());
        }
        let (done, watcher) = watch::channel(None);
        leaders.insert(id, watcher);
        Turn::Lead(Leadership {
            claims: self.clone(),
            id,
            done,
        })
    }
}

impl Leadership {
    /// The key's record is committed (this leader wrote it, or found it): the followers answer
    /// from it when the leader is done.
    pub(crate) fn settled(&self, record: KeyRecord) {
        self.done.send_replace(Some(Arc::new(record)));
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Removed before `done` drops, so a woken follower never finds this stale entry.
        self.claims
            .leaders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Resolves when the leader behind `leader` has finished, however it finished: with the
/// record it settled, if it settled one.
pub(crate) async fn leader_finished(mut leader: watch::Receiver<Finished>) -> Finished {
    // `changed` fails exactly when the sender drops; what was sent before stays readable.
    while leader.changed().await.is_ok() {}
    leader.borrow().clone()
}
