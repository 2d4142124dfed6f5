//! The runtime seam: the one place where detcd touches time, randomness and sockets.
//!
//! The node is built twice from the same source: for real tokio (the `detcd` binary) and, with
//! `--cfg madsim`, for the madsim simulator (the `detcd-sim` harness). `tokio` in this crate is
//! `madsim-tokio`, which *is* tokio in the normal build and madsim's simulated runtime under
//! `--cfg madsim`; so timers, tasks and TCP sockets below are simulated there without any code
//! in the node knowing it. What cannot be intercepted that way lives here:
//!
//! * [`Clock`]: every reading of time in the node. Under the simulator every member shares one
//!   global clock, so the harness gives each member its own skewed view (offset, drift, jumps)
//!   through [`Clock::skew`].
//! * [`NodeRng`]: every random number in the node, from a seed (never the OS).
//! * [`FlushFilter`]: madsim's `TcpStream::poll_flush` sends a network message even when nothing
//!   was written, and hyper flushes very often; empty messages then queue ahead of real data and
//!   latency grows with every request on a keep-alive connection. The filter passes a flush
//!   through only when bytes were written since the last one. On a real socket flush is a no-op,
//!   so the filter costs nothing there and is used in both builds. Under madsim it also paces:
//!   madsim delivers a stream's messages one after another with a sleep of at least 1 ms each
//!   (its `sleep_until` floor), so a stream carries at most 1,000 flushes a second and a busier
//!   sender's messages queue without bound (a follower's acks and forwarded proposals did: at
//!   ~1,700 a second, latency grew by ~0.7 s a second). Flushes closer than [`SIM_FLUSH_GAP`]
//!   wait for the gap, so whatever is written meanwhile travels in the same message: what a
//!   real TCP stream does with a busy link. [`FlushFilter::coalescing`] (HTTP/2 clients) also
//!   lets the other tasks runnable at that instant add to a flush before it leaves, on both
//!   runtimes: on a real socket it holds the bytes until the flush, so a gRPC request's
//!   HEADERS and DATA leave in one `writev`, as Go's gRPC client sends them.
//! * [`HyperTimer`]: hyper's timer on `tokio::time` (hyper-util's `TokioTimer` reaches for the
//!   real tokio runtime and panics inside the simulation).
//! * [`time`]: `sleep`, `timeout`, `interval` for node code. madsim's sleep adds a timer entry
//!   on every poll and never cancels one; these register once per waker (see the module).
//! * [`h2`]: hyper's HTTP/2 (gRPC) server and client on the seam's executor, timer and flush
//!   filter.
//! * [`Probe`]: the node's failpoints (nothing outside the simulator) and its invariants,
//!   which the simulator reports with the member's name.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod h2;
pub mod probe;
pub mod process;
pub mod time;
pub mod tls;
pub mod watch;

pub use probe::Probe;
#[cfg(any(madsim, feature = "probe-handler"))]
pub use probe::ProbeHandler;
pub use time::{
    interval, sleep, sleep_exact, sleep_until, sleep_until_exact, timeout, timeout_at, Elapsed,
    Interval, Missed,
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use tokio::time::Instant;

/// How a member's clock deviates from true (simulated) time. Production clocks are never
/// skewed; the simulator sets this through [`Clock::skew`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Skew {
    /// Fixed offset added to the wall clock, in milliseconds (may be negative).
    pub offset_ms: i64,
    /// Drift in parts per million, applied to time elapsed since `drift_since`.
    pub drift_ppm: i64,
    /// The true wall-clock time (ms since the UNIX epoch) from which drift accumulates.
    pub drift_since_ms: u64,
}

/// The node's view of time. Cloning shares the skew, so the harness can hold a clone and
/// change the member's time while it runs.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew: Arc<Mutex<Skew>>,
}

impl Clock {
    /// A clock with no skew.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// The handle through which a harness skews this clock.
    pub fn skew(&self) -> &Arc<Mutex<Skew>> {
        &self.skew
    }

    /// Monotonic time for timeouts and durations. It is not skewed: skew models a wrong
    /// wall clock (NTP), while elapsed time on one machine stays right.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock time in milliseconds since the UNIX epoch, as this member believes it to be.
    /// Only used for values that leave the member (TTL expiry proposals, stats, logs).
    pub fn wall_ms(&self) -> u64 {
        let true_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let skew = *self.skew.lock().unwrap_or_else(|e| e.into_inner());
        let drifted = if skew.drift_ppm != 0 && true_ms > skew.drift_since_ms {
            ((true_ms - skew.drift_since_ms) as i128 * skew.drift_ppm as i128 / 1_000_000) as i64
        } else {
            0
        };
        (true_ms as i64 + skew.offset_ms + drifted).max(0) as u64
    }

    /// Sleep for `d` on this member's timers (paused members' timers stop in the simulator).
    pub fn sleep(&self, d: Duration) -> time::Sleep {
        time::sleep(d)
    }
}

/// The node's seeded random number generator (ChaCha8). Cloning shares the stream.
#[derive(Clone)]
pub struct NodeRng {
    inner: Arc<Mutex<ChaCha8Rng>>,
}

impl NodeRng {
    /// A generator from a 64-bit seed.
    pub fn from_seed(seed: u64) -> NodeRng {
        NodeRng {
            inner: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
        }
    }

    /// A uniformly random u64.
    pub fn next_u64(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).gen()
    }

    /// A uniformly random value in `[lo, hi)`; `lo` when the range is empty.
    pub fn range(&self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gen_range(lo..hi)
    }
}

impl std::fmt::Debug for NodeRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRng")
    }
}

/// Spawn a task on the current runtime (the member's own node in the simulator).
#[track_caller]
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut)
}

/// Run blocking work (serialising and writing a snapshot) off the runtime's workers: on
/// tokio's blocking pool in production, so a request handler or the Ready loop never waits
/// behind it; in the simulator as a task of the member's own node (it runs in one poll, and
/// is lost with the node when the member crashes).
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f)
    }
    #[cfg(madsim)]
    {
        tokio::spawn(async move { f() })
    }
}

/// Let the tasks this one has just woken run before it goes on. The Ready loop calls this
/// right after applying entries (which wakes their requests' handlers), before the rest of
/// the Ready (a WAL write, maybe an fsync on its own worker thread) and of its turn: tokio
/// keeps the task woken last in a per-worker slot that no other worker may steal, so without
/// this one handler per Ready would answer only after all of that (measured: a 1-client Put
/// through a follower waited ~35 us more between its apply and its handler running).
/// (tokio's `block_in_place` would move it, but hands the worker's whole run queue to another
/// thread on every fsync: 4.5 futex calls per write on the 16-client v3 benchmark against 1.7
/// without it, and 8-16% more CPU per write; what it kept better is the p99.9 with 16 clients
/// on the leader, by about 2 ms, as tasks queued behind the fsync ran on that other thread:
/// see reports/vs-etcd.md.) In the simulator a blocking call takes no simulated time, so
/// nothing waits behind it and this does nothing: simulated histories do not depend on it.
pub async fn run_woken_first() {
    #[cfg(not(madsim))]
    tokio::task::yield_now().await;
}

/// Tune a freshly connected or accepted TCP stream. Nagle's algorithm would add up to 40 ms
/// to small Raft messages and HTTP replies; the simulator's streams have no such option.
pub fn tune_stream(stream: &tokio::net::TcpStream) {
    #[cfg(not(madsim))]
    {
        let _ = stream.set_nodelay(true);
    }
    #[cfg(madsim)]
    {
        let _ = stream;
    }
}

/// Under madsim, the least time between two flushes of one stream (madsim's delivery floor).
pub const SIM_FLUSH_GAP: Duration = Duration::from_millis(1);

/// Under madsim with exact network delays (a scenario's `network.exact_delays`: messages
/// arrive at their drawn latency, however short), the least time between two flushes of one
/// stream: a tenth of the default, so a busy stream still carries what is written meanwhile
/// in one message, as a real TCP stream does on a busy link.
pub const SIM_EXACT_FLUSH_GAP: Duration = Duration::from_micros(100);

/// Under madsim, whether the simulated network delivers at exact sub-millisecond delays.
fn sim_exact_delays() -> bool {
    #[cfg(madsim)]
    {
        madsim::net::NetSim::current().exact_delays()
    }
    #[cfg(not(madsim))]
    {
        false
    }
}

pin_project_lite::pin_project! {
    /// Passes `poll_flush` through only when bytes were written since the last flush, and
    /// under madsim no sooner than [`SIM_FLUSH_GAP`] after the previous one (see the module
    /// docs for why).
    pub struct FlushFilter<S> {
        #[pin]
        inner: S,
        dirty: bool,
        last_flush: Option<Instant>,
        // Under madsim, the network's delays are exact (see `SIM_EXACT_FLUSH_GAP`).
        exact: bool,
        pacing: Option<Pin<Box<time::Sleep>>>,
        coalesce: u8,
        rounds_left: u8,
        // Real runtime, coalescing streams only: the bytes written since the last flush,
        // handed to the socket at the flush.
        held: Option<Vec<u8>>,
    }
}

/// On a real runtime, how many times a [`FlushFilter::coalescing`] stream's flush yields to
/// the tasks runnable at that moment before its bytes go out (tokio puts a task that woke
/// itself behind the tasks already queued).
pub const REAL_COALESCE_ROUNDS: u8 = 1;

/// A coalescing stream on a real runtime hands its held bytes to the socket, without waiting
/// for a flush, once they reach this much.
pub const REAL_HOLD_MAX: usize = 64 * 1024;

/// Under madsim, how many scheduler rounds a [`FlushFilter::coalescing`] stream's flush gives
/// the other runnable tasks before it goes out (zero simulated time).
pub const SIM_COALESCE_ROUNDS: u8 = 8;

impl<S> FlushFilter<S> {
    /// Wrap a stream.
    pub fn new(inner: S) -> FlushFilter<S> {
        FlushFilter {
            inner,
            dirty: false,
            last_flush: None,
            exact: sim_exact_delays(),
            pacing: None,
            coalesce: 0,
            rounds_left: 0,
            held: None,
        }
    }

    /// Wrap a stream whose writer hands its bytes over from several tasks: under madsim, a
    /// flush that needs no pacing first lets the other runnable tasks run for
    /// [`SIM_COALESCE_ROUNDS`] scheduler rounds (no simulated time passes), so what they add
    /// at the same instant travels in the same message. hyper's HTTP/2 client needs it: a
    /// request's HEADERS are written by the connection task, which only then grants the
    /// stream send capacity, and its DATA by another task woken by that grant; flushed
    /// apart, the DATA is one more message (1 ms in madsim).
    ///
    /// On a real runtime the stream holds what is written until a flush, and a flush first
    /// yields [`REAL_COALESCE_ROUNDS`] times: the HEADERS and DATA then leave in one `writev`
    /// instead of two. On loopback each send also runs the receiver's TCP input, and each
    /// segment wakes the server: the 64-client v3 benchmark's load generator spent a third
    /// of its CPU in `writev`.
    pub fn coalescing(inner: S) -> FlushFilter<S> {
        let rounds = if cfg!(madsim) {
            SIM_COALESCE_ROUNDS
        } else {
            REAL_COALESCE_ROUNDS
        };
        FlushFilter {
            coalesce: rounds,
            rounds_left: rounds,
            held: (!cfg!(madsim)).then(Vec::new),
            ..FlushFilter::new(inner)
        }
    }

    /// Wrap a stream whose writer flushes after each batch of writes (hyper's servers): on a
    /// real runtime the bytes written between two flushes go to the socket in one write at
    /// the flush (or once [`REAL_HOLD_MAX`] is reached), without yielding first. h2 hands
    /// each DATA frame of more than 256 bytes to the socket on its own; a Watch stream's
    /// responses to a batch of revisions were a `write` each, 39% of a member's CPU on the
    /// 32-writer watch fan-out benchmark. The same as [`Self::new`] under madsim.
    pub fn holding(inner: S) -> FlushFilter<S> {
        FlushFilter {
            held: (!cfg!(madsim)).then(Vec::new),
            ..FlushFilter::new(inner)
        }
    }
}

/// Add `bufs` to the bytes `held` for the next flush, first handing those to `inner` if
/// they reached [`REAL_HOLD_MAX`].
fn hold<S: AsyncWrite>(
    inner: Pin<&mut S>,
    held: &mut Vec<u8>,
    dirty: &mut bool,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    if held.len() >= REAL_HOLD_MAX {
        std::task::ready!(write_held(inner, held, cx))?;
    }
    let before = held.len();
    for b in bufs {
        held.extend_from_slice(b);
    }
    let n = held.len() - before;
    *dirty |= n > 0;
    Poll::Ready(Ok(n))
}

/// Hand `held` to `inner` until it is empty.
fn write_held<S: AsyncWrite>(
    mut inner: Pin<&mut S>,
    held: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !held.is_empty() {
        let n = std::task::ready!(inner.as_mut().poll_write(cx, held))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        held.drain(..n);
    }
    Poll::Ready(Ok(()))
}

impl<S: AsyncRead> AsyncRead for FlushFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for FlushFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Some(held) = this.held {
            return hold(this.inner, held, this.dirty, cx, &[io::IoSlice::new(buf)]);
        }
        let r = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                *this.dirty = true;
            }
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Some(held) = this.held {
            return hold(this.inner, held, this.dirty, cx, bufs);
        }
        let r = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                *this.dirty = true;
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.held.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if !*this.dirty {
            return Poll::Ready(Ok(()));
        }
        let mut paced = false;
        if cfg!(madsim) {
            if let Some(last) = *this.last_flush {
                let (gap, sleep_until): (_, fn(Instant) -> time::Sleep) = if *this.exact {
                    (SIM_EXACT_FLUSH_GAP, time::sleep_until_exact)
                } else {
                    (SIM_FLUSH_GAP, time::sleep_until)
                };
                let due = last + gap;
                if Instant::now() < due {
                    let wait = this
                        .pacing
                        .get_or_insert_with(|| Box::pin(sleep_until(due)));
                    if wait.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
            paced = this.pacing.take().is_some();
        }
        // A paced flush has already waited; an unpaced one first lets the tasks runnable now
        // add to it (coalescing streams only).
        if !paced && *this.rounds_left > 0 {
            *this.rounds_left -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(held) = this.held {
            std::task::ready!(write_held(this.inner.as_mut(), held, cx))?;
        }
        let r = this.inner.poll_flush(cx);
        if let Poll::Ready(Ok(())) = &r {
            *this.dirty = false;
            *this.rounds_left = *this.coalesce;
            if cfg!(madsim) {
                *this.last_flush = Some(Instant::now());
            }
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if let Some(held) = this.held {
            std::task::ready!(write_held(this.inner.as_mut(), held, cx))?;
        }
        this.inner.poll_shutdown(cx)
    }
}

/// hyper's timer, on `tokio::time` (simulated under madsim).
#[derive(Clone, Debug, Default)]
pub struct HyperTimer;

struct HyperSleep(Pin<Box<time::Sleep>>);

impl Future for HyperSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(Box::pin(time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let d = deadline.saturating_duration_since(std::time::Instant::now());
        Box::pin(HyperSleep(Box::pin(time::sleep(d))))
    }
}

/// hyper's executor: spawns connection tasks on the current runtime.
#[derive(Clone, Debug, Default)]
pub struct HyperExec;

impl<F> hyper::rt::Executor<F> for HyperExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Run the node's top-level future: a multi-threaded tokio runtime in production. Under the
/// simulator the harness owns the runtime and never calls this; it is provided so the
/// binary still builds there.
#[cfg(not(madsim))]
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // Two workers unless tokio's own TOKIO_WORKER_THREADS says otherwise.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(2);
    }
    b.enable_all()
        .build()
        .expect("building the tokio runtime")
        .block_on(fut)
}

/// See the production variant.
#[cfg(madsim)]
pub fn block_on<F: Future>(fut: F) -> F::Output {
    madsim::runtime::Runtime::new().block_on(fut)
}

/// Send one datagram. (madsim's `UdpSocket::send_to` takes the address first.)
pub async fn udp_send_to(
    sock: &tokio::net::UdpSocket,
    buf: &[u8],
    to: std::net::SocketAddr,
) -> std::io::Result<()> {
    #[cfg(madsim)]
    {
        sock.send_to(to, buf).await
    }
    #[cfg(not(madsim))]
    {
        sock.send_to(buf, to).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_from_its_seed() {
        let a = NodeRng::from_seed(7);
        let b = NodeRng::from_seed(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(NodeRng::from_seed(8).next_u64(), xs[0]);
    }

    #[test]
    fn skew_moves_the_wall_clock_only() {
        let c = Clock::new();
        let before = c.wall_ms();
        c.skew().lock().unwrap().offset_ms = 30_000;
        let after = c.wall_ms();
        assert!(
            after >= before + 30_000 && after < before + 31_000,
            "{before} {after}"
        );
        c.skew().lock().unwrap().offset_ms = -30_000;
        assert!(c.wall_ms() + 29_000 < after);
    }

    /// A socket that records each write it is handed, taking at most `max` bytes of one.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        max: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[cfg(not(madsim))]
    fn recorder(max: usize) -> Pin<Box<FlushFilter<Recorder>>> {
        Box::pin(FlushFilter::coalescing(Recorder {
            max,
            ..Recorder::default()
        }))
    }

    #[cfg(not(madsim))]
    fn write(f: &mut Pin<Box<FlushFilter<Recorder>>>, b: &[u8]) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(f.as_mut().poll_write(&mut cx, b), Poll::Ready(Ok(n)) if n == b.len()));
    }

    #[cfg(not(madsim))]
    fn flush(f: &mut Pin<Box<FlushFilter<Recorder>>>) -> Poll<io::Result<()>> {
        f.as_mut()
            .poll_flush(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// On a real runtime a coalescing stream's flush yields once, and what is written
    /// meanwhile (a request's DATA after its HEADERS) leaves with it in one write.
    #[cfg(not(madsim))]
    #[test]
    fn a_coalescing_flush_waits_one_round_and_sends_one_write() {
        let mut f = recorder(usize::MAX);
        write(&mut f, b"HEADERS");
        assert!(flush(&mut f).is_pending(), "the first flush yields");
        assert!(f.inner.writes.is_empty(), "nothing leaves before the flush");
        write(&mut f, b"DATA");
        assert!(matches!(flush(&mut f), Poll::Ready(Ok(()))));
        assert_eq!(f.inner.writes, vec![b"HEADERSDATA".to_vec()]);
        assert_eq!(f.inner.flushes, 1);
        // Each flush after a write yields again; one with nothing written does not.
        assert!(matches!(flush(&mut f), Poll::Ready(Ok(()))));
        write(&mut f, b"next");
        assert!(flush(&mut f).is_pending());
        assert!(matches!(flush(&mut f), Poll::Ready(Ok(()))));
        assert_eq!(f.inner.writes.len(), 2);
        assert_eq!(f.inner.writes[1], b"next");
    }

    /// Held bytes go out in as many writes as the socket needs, before the flush once they
    /// reach the limit, and at shutdown.
    #[cfg(not(madsim))]
    #[test]
    fn held_bytes_leave_at_the_limit_in_partial_writes_and_at_shutdown() {
        let mut f = recorder(REAL_HOLD_MAX / 2 + 1);
        write(&mut f, &vec![7; REAL_HOLD_MAX]);
        assert!(f.inner.writes.is_empty());
        write(&mut f, b"tail");
        let sizes: Vec<usize> = f.inner.writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![REAL_HOLD_MAX / 2 + 1, REAL_HOLD_MAX / 2 - 1]);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            f.as_mut().poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(f.inner.writes.last().unwrap(), b"tail");
        assert!(f.inner.shut);
    }

    /// A plain filter hands every write straight to the socket.
    #[test]
    fn a_plain_filter_writes_through() {
        let mut f = Box::pin(FlushFilter::new(Recorder {
            max: usize::MAX,
            ..Recorder::default()
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(f.as_mut().poll_write(&mut cx, b"a").is_ready());
        assert_eq!(f.inner.writes, vec![b"a".to_vec()]);
        assert!(matches!(
            f.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(f.inner.flushes, 1);
    }
}
