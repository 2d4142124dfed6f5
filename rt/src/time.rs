//! Timers for node code: `sleep`, `timeout`, `interval`, on tokio in production and on madsim's
//! simulated clock in the simulator, with one difference that only matters there.
//!
//! madsim's `Sleep` has no cancellation and registers a new timer entry on *every* poll while
//! it is pending: a sleep inside a `select!` or a `timeout` around a future that is woken often
//! (a Ready loop's tick, a request's deadline, hyper's header timer) leaves one entry in the
//! simulator's timer heap per poll, each living until its deadline and then waking the task
//! for nothing. The simulator spent a tenth of its time popping such entries. [`Sleep`] here
//! registers once per waker: a poll with the waker it already registered only checks the
//! deadline. On tokio it is tokio's `Sleep`, polled as is.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::Instant;

pin_project_lite::pin_project! {
    /// A sleep until a deadline (see the module docs).
    #[derive(Debug)]
    pub struct Sleep {
        #[pin]
        inner: tokio::time::Sleep,
        // The waker the inner sleep's timer will wake (madsim only).
        registered: Option<Waker>,
    }
}

/// Sleep for `d`.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Sleep until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        inner: tokio::time::sleep_until(deadline),
        registered: None,
    }
}

/// Sleep for `d` exactly. Under madsim [`sleep`] never sleeps less than 1 ms (madsim's
/// floor, as tokio's timer wheel); this one does, for simulated times (an fsync, a flush gap)
/// that are shorter. On tokio it is [`sleep`].
pub fn sleep_exact(d: Duration) -> Sleep {
    sleep_until_exact(Instant::now() + d)
}

/// Sleep until `deadline` exactly (see [`sleep_exact`]).
pub fn sleep_until_exact(deadline: Instant) -> Sleep {
    #[cfg(madsim)]
    let inner = tokio::time::sleep_until_exact(deadline);
    #[cfg(not(madsim))]
    let inner = tokio::time::sleep_until(deadline);
    Sleep {
        inner,
        registered: None,
    }
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// Move the deadline (later or earlier).
    pub fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.project();
        *this.registered = None;
        this.inner.reset(deadline);
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if cfg!(madsim) {
            if this.inner.is_elapsed() {
                return Poll::Ready(());
            }
            if let Some(w) = this.registered.as_ref() {
                if w.will_wake(cx.waker()) {
                    // Our timer entry is in the heap already and will wake this task.
                    return Poll::Pending;
                }
            }
            *this.registered = Some(cx.waker().clone());
        }
        this.inner.poll(cx)
    }
}

/// A deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// `fut`, unless `deadline` comes first.
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        this.sleep.poll(cx).map(|()| Err(Elapsed))
    }
}

/// Time out `fut` after `d`.
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    timeout_at(Instant::now() + d, fut)
}

/// Time out `fut` at `deadline`.
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep_until(deadline),
    }
}

/// What an [`Interval`] does after a tick it missed (it was not polled in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Tick at once for every missed period (tokio's default, `Burst`).
    Burst,
    /// Next tick one period after the late one (tokio's `Delay`).
    Delay,
}

/// Ticks every `period`; the first tick is immediate (as tokio's `interval`).
#[derive(Debug)]
pub struct Interval {
    sleep: Pin<Box<Sleep>>,
    period: Duration,
    missed: Missed,
}

/// An interval ticking every `period` (which must be positive), missed ticks in a burst.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be positive");
    Interval {
        sleep: Box::pin(sleep_until(Instant::now())),
        period,
        missed: Missed::Burst,
    }
}

impl Interval {
    /// What to do after a missed tick.
    pub fn set_missed(&mut self, missed: Missed) {
        self.missed = missed;
    }

    /// Wait for the next tick; returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Poll for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let at = self.sleep.deadline();
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = match self.missed {
            Missed::Burst => at + self.period,
            Missed::Delay => Instant::now() + self.period,
        };
        self.sleep.as_mut().reset(next);
        Poll::Ready(at)
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timeout_elapses_and_passes_through() {
        let r = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        let r = timeout(Duration::from_millis(10), async { 7 }).await;
        assert_eq!(r, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn interval_first_tick_is_immediate_then_periodic() {
        let start = Instant::now();
        let mut i = interval(Duration::from_millis(100));
        assert_eq!(i.tick().await, start);
        assert_eq!(i.tick().await, start + Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(350)).await;
        // Burst: the missed ticks come at once, at their scheduled times.
        assert_eq!(i.tick().await, start + Duration::from_millis(200));
        i.set_missed(Missed::Delay);
        let late = i.tick().await;
        assert_eq!(late, start + Duration::from_millis(300));
        let next = i.tick().await;
        assert!(next >= Instant::now() - Duration::from_millis(1));
    }
}
