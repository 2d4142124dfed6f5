//! A watch channel (the latest value, and a wake-up when it changes) for node code, with the
//! part of `tokio::sync::watch`'s interface detcd uses.
//!
//! tokio's watch spreads its receivers over eight `Notify`s, picking one per `changed()` call
//! from tokio's thread-local random generator, whose seed mixes in a process-wide counter. So
//! the order in which a change wakes its receivers (in the simulator, which task runs first)
//! differs between two simulations run in one process: madsim's own determinism check, which
//! runs a seed twice in one process, caught it (two proposals re-sent after a leader change
//! reached the log in either order). This channel keeps its waiters on one `Notify`, woken in
//! the order they began to wait.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::Notify;

#[derive(Debug)]
struct Shared<T> {
    value: RwLock<T>,
    /// Bumped on every change.
    version: AtomicU64,
    /// The sender is gone.
    closed: AtomicBool,
    receivers: AtomicUsize,
    notify: Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half.
#[derive(Debug)]
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A receiving half: remembers the version it last saw.
#[derive(Debug)]
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

/// `send` found no receiver; the value is handed back (and not stored, as with tokio).
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// The sender is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the watch channel's sender is gone")
    }
}

impl std::error::Error for RecvError {}

/// A borrowed view of the current value (holds a read lock: drop it before awaiting).
pub type Ref<'a, T> = RwLockReadGuard<'a, T>;

/// A channel holding `init`.
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        value: RwLock::new(init),
        version: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        receivers: AtomicUsize::new(1),
        notify: Notify::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared, seen: 0 },
    )
}

impl<T> Sender<T> {
    /// Store `v` and wake the receivers, unless there is no receiver (then `v` comes back).
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        if self.shared.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(v));
        }
        self.send_replace(v);
        Ok(())
    }

    /// Store `v` whether or not anyone listens, wake the receivers, return the old value.
    pub fn send_replace(&self, v: T) -> T {
        let old = {
            let mut g = self.shared.value.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *g, v)
        };
        self.shared.version.fetch_add(1, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        old
    }

    /// The current value.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.shared.read()
    }

    /// A new receiver that has seen the current value.
    pub fn subscribe(&self) -> Receiver<T> {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver {
            shared: Arc::clone(&self.shared),
            seen: self.shared.version.load(Ordering::SeqCst),
        }
    }

    /// How many receivers there are.
    pub fn receiver_count(&self) -> usize {
        self.shared.receivers.load(Ordering::SeqCst)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// The current value.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.shared.read()
    }

    /// The current value, marked as seen.
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        self.seen = self.shared.version.load(Ordering::SeqCst);
        self.shared.read()
    }

    /// Wait for a value this receiver has not seen (and mark it seen); an error once the
    /// sender is gone.
    pub async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the version is read: a change after the read still wakes us.
            notified.as_mut().enable();
            let v = self.shared.version.load(Ordering::SeqCst);
            if v != self.seen {
                self.seen = v;
                return Ok(());
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(RecvError);
            }
            notified.await;
        }
    }

    /// Wait until the value satisfies `f` (checked on the current value first); an error if
    /// the sender goes away first.
    pub async fn wait_for(&mut self, mut f: impl FnMut(&T) -> bool) -> Result<(), RecvError> {
        loop {
            self.seen = self.shared.version.load(Ordering::SeqCst);
            if f(&self.shared.read()) {
                return Ok(());
            }
            self.changed().await?;
            if f(&self.shared.read()) {
                return Ok(());
            }
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver {
            shared: Arc::clone(&self.shared),
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_wake_receivers_and_closing_ends_them() {
        let (tx, mut rx) = channel(1);
        let mut rx2 = tx.subscribe();
        tx.send(2).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 2);
        let waiter =
            tokio::spawn(async move { rx2.wait_for(|v| *v >= 5).await.map(|_| *rx2.borrow()) });
        tx.send_replace(4);
        tx.send_replace(5);
        assert_eq!(waiter.await.unwrap(), Ok(5));
        drop(tx);
        // A change not seen yet is still reported after the sender left; then the end.
        assert_eq!(rx.changed().await, Ok(()));
        assert_eq!(*rx.borrow(), 5);
        assert_eq!(rx.changed().await, Err(RecvError));
    }

    #[test]
    fn send_without_receivers_hands_the_value_back() {
        let (tx, rx) = channel(0);
        drop(rx);
        assert_eq!(tx.send(3), Err(SendError(3)));
        assert_eq!(*tx.borrow(), 0);
        assert_eq!(tx.send_replace(7), 0);
        assert_eq!(*tx.borrow(), 7);
    }
}
