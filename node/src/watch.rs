//! The v3 watch hub: what every watch stream of this member reads its events from.
//!
//! The Ready loop publishes, after each applied batch, the keyspace revision the batch
//! reached and (while any watcher exists) the batch's events, grouped by revision, into a
//! bounded in-memory ring. A watcher is a cursor (the next revision it owes its client):
//! it reads revisions still in the ring from memory, older ones from the keyspace's
//! history ([`crate::mvcc::Mvcc::events`], etcd's `syncWatchers`), and waits on the
//! published revision for newer ones. Events only ever come from applied entries, so a
//! member cut off from the leader never shows a watcher anything uncommitted, and a
//! watcher's cursor only moves forward: no gap, no duplicate, a revision never split.
//!
//! With no watcher, the loop publishes only the revision (no event is read back), so a
//! workload without watches pays nothing for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use detcd_proto::mvccpb;
use tokio::sync::watch;

/// Revisions kept in memory at most (older ones are read from the keyspace).
pub const RING_REVISIONS: usize = 4096;
/// Event bytes kept in memory at most (values included).
pub const RING_BYTES: usize = 16 << 20;

/// One revision's events, in the order the write made them.
pub type RevEvents = Arc<[mvccpb::Event]>;

/// See the module documentation.
pub struct Hub {
    ring: Mutex<Ring>,
    published: watch::Sender<i64>,
    compacted: AtomicI64,
    watchers: AtomicUsize,
}

struct Ring {
    /// The first revision the ring can answer for (events of every revision from here to
    /// `next - 1` that had any are held).
    first: i64,
    /// The revision after the last one held.
    next: i64,
    revs: VecDeque<(i64, RevEvents)>,
    bytes: usize,
}

impl Ring {
    fn reset(&mut self, at: i64) {
        self.first = at;
        self.next = at;
        self.revs.clear();
        self.bytes = 0;
    }
}

/// What a watcher gets when it asks for the revisions from its cursor.
#[derive(Debug)]
pub enum Fetched {
    /// Revisions `from..=upto` (those with events listed, in order); the cursor moves to
    /// `upto + 1`.
    Events {
        /// The events, one entry per revision that had any.
        revs: Vec<(i64, RevEvents)>,
        /// The last revision this answer covers.
        upto: i64,
    },
    /// The cursor is below the compacted revision: the watcher can never be served.
    Compacted(i64),
    /// The keyspace could not be read.
    Failed(String),
}

/// Why the keyspace's history could not answer (see [`Hub::fetch`]).
#[derive(Debug)]
pub enum HistoryError {
    /// Revisions below this one were compacted away.
    Compacted(i64),
    /// The backend failed.
    Failed(String),
}

impl Hub {
    /// A hub whose keyspace is at `revision`, compacted at `compacted`.
    pub fn new(revision: i64, compacted: i64) -> Hub {
        Hub {
            ring: Mutex::new(Ring {
                first: revision + 1,
                next: revision + 1,
                revs: VecDeque::new(),
                bytes: 0,
            }),
            published: watch::channel(revision).0,
            compacted: AtomicI64::new(compacted),
            watchers: AtomicUsize::new(0),
        }
    }

    /// The last revision published: every event up to it can be read.
    pub fn revision(&self) -> i64 {
        *self.published.borrow()
    }

    /// The keyspace's compacted revision as of the last publication.
    pub fn compacted(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// A receiver that changes whenever a revision is published.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.published.subscribe()
    }

    /// Whether any watcher exists on this member (the loop reads events back only then).
    pub fn active(&self) -> bool {
        self.watchers.load(Ordering::Acquire) > 0
    }

    /// Count one more watcher until the guard drops.
    pub fn register(self: &Arc<Self>) -> WatcherGuard {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        WatcherGuard(Arc::clone(self))
    }

    /// After an applied batch took the keyspace from revision `before` to `after`: hold
    /// `events` (those of revisions `before+1..=after`, in order; `None` when no watcher
    /// exists), then publish `after`. A batch that does not start where the ring ends (a
    /// snapshot installed in between, or a batch published without events) empties the
    /// ring: its watchers read those revisions from the keyspace instead.
    pub fn publish(
        &self,
        before: i64,
        after: i64,
        compacted: i64,
        events: Option<Vec<mvccpb::Event>>,
    ) {
        {
            let mut ring = self.ring.lock().expect("watch ring lock");
            match events {
                Some(events) if ring.next == before + 1 => {
                    for (rev, group) in by_revision(events) {
                        ring.bytes += group.iter().map(prost::Message::encoded_len).sum::<usize>();
                        ring.revs.push_back((rev, group));
                    }
                    ring.next = after + 1;
                    while ring.revs.len() > RING_REVISIONS || ring.bytes > RING_BYTES {
                        let Some((r, evs)) = ring.revs.pop_front() else {
                            break;
                        };
                        ring.bytes -= evs.iter().map(prost::Message::encoded_len).sum::<usize>();
                        ring.first = r + 1;
                    }
                }
                _ => ring.reset(after + 1),
            }
        }
        self.compacted.store(compacted, Ordering::Release);
        self.published.send_if_modified(|r| {
            let changed = *r != after;
            *r = after;
            changed
        });
    }

    /// The events of revisions from `from` up to `to` (at most `max_revs` revisions), from
    /// the ring when it holds them all, else through `history(from, to)`: the keyspace's
    /// events of revisions `from..=upto` for some `upto <= to` it chose (whole revisions).
    pub fn fetch(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
        history: impl FnOnce(i64, i64) -> Result<(Vec<mvccpb::Event>, i64), HistoryError>,
    ) -> Fetched {
        let compacted = self.compacted();
        if from < compacted {
            return Fetched::Compacted(compacted);
        }
        let to = to.min(from.saturating_add(max_revs as i64 - 1));
        {
            let ring = self.ring.lock().expect("watch ring lock");
            if from >= ring.first && to < ring.next {
                let start = ring.revs.partition_point(|(r, _)| *r < from);
                let revs = ring
                    .revs
                    .iter()
                    .skip(start)
                    .take_while(|(r, _)| *r <= to)
                    .cloned()
                    .collect();
                return Fetched::Events { revs, upto: to };
            }
        }
        match history(from, to) {
            Err(HistoryError::Compacted(c)) => Fetched::Compacted(c),
            Err(HistoryError::Failed(e)) => Fetched::Failed(e),
            Ok((events, upto)) => Fetched::Events {
                revs: by_revision(events),
                upto: upto.min(to),
            },
        }
    }
}

/// Events in revision order, grouped by revision (each group in the order the write made
/// them).
fn by_revision(events: Vec<mvccpb::Event>) -> Vec<(i64, RevEvents)> {
    let mut revs: Vec<(i64, Vec<mvccpb::Event>)> = Vec::new();
    for ev in events {
        let r = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        match revs.last_mut() {
            Some((last, group)) if *last == r => group.push(ev),
            _ => revs.push((r, vec![ev])),
        }
    }
    revs.into_iter().map(|(r, g)| (r, g.into())).collect()
}

/// Counts a live watcher (see [`Hub::register`]).
pub struct WatcherGuard(Arc<Hub>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, rev: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                create_revision: rev,
                version: 1,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn revs(f: Fetched) -> (Vec<i64>, i64) {
        match f {
            Fetched::Events { revs, upto } => (revs.iter().map(|(r, _)| *r).collect(), upto),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ring_answers_what_it_holds_and_history_the_rest() {
        let hub = Hub::new(1, 0);
        hub.publish(1, 3, 0, Some(vec![put("a", 2), put("b", 3), put("c", 3)]));
        assert_eq!(hub.revision(), 3);
        let no_history =
            |_, _| -> Result<(Vec<mvccpb::Event>, i64), HistoryError> { panic!("read history") };
        assert_eq!(revs(hub.fetch(2, 3, 1000, no_history)), (vec![2, 3], 3));
        // A revision's events stay together and in order.
        if let Fetched::Events { revs, .. } = hub.fetch(3, 3, 1000, no_history) {
            let keys: Vec<_> = revs[0]
                .1
                .iter()
                .map(|e| e.kv.clone().unwrap().key)
                .collect();
            assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        }
        // Revision 1 is older than the ring: read from history.
        let hist = |from, to| {
            assert_eq!((from, to), (1, 3));
            Ok((vec![put("x", 1), put("a", 2)], 3))
        };
        assert_eq!(revs(hub.fetch(1, 3, 1000, hist)), (vec![1, 2], 3));
        // At most max_revs revisions per answer.
        assert_eq!(revs(hub.fetch(2, 3, 1, no_history)), (vec![2], 2));
    }

    #[test]
    fn a_batch_that_does_not_follow_the_ring_empties_it() {
        let hub = Hub::new(0, 0);
        hub.publish(0, 1, 0, Some(vec![put("a", 1)]));
        // Published without events (no watcher then): the ring cannot answer for 2.
        hub.publish(1, 2, 0, None);
        hub.publish(2, 3, 0, Some(vec![put("c", 3)]));
        let mut asked = None;
        let f = hub.fetch(1, 3, 1000, |from, to| {
            asked = Some((from, to));
            Ok((vec![], to))
        });
        assert_eq!(revs(f), (vec![], 3));
        assert_eq!(asked, Some((1, 3)));
    }

    #[test]
    fn below_the_compacted_revision_is_compacted() {
        let hub = Hub::new(5, 4);
        assert!(matches!(
            hub.fetch(3, 5, 1000, |_, _| Ok((vec![], 5))),
            Fetched::Compacted(4)
        ));
        assert!(matches!(
            hub.fetch(4, 5, 1000, |_, _| Err(HistoryError::Compacted(4))),
            Fetched::Compacted(4)
        ));
    }

    #[test]
    fn the_ring_is_bounded() {
        let hub = Hub::new(0, 0);
        for r in 1..=(RING_REVISIONS as i64 + 10) {
            hub.publish(r - 1, r, 0, Some(vec![put("k", r)]));
        }
        let ring = hub.ring.lock().unwrap();
        assert_eq!(ring.revs.len(), RING_REVISIONS);
        assert_eq!(ring.first, 11);
    }
}
