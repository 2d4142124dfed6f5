//! The simulated network after a partition heals (run with `cargo simtest`): a TCP stream
//! whose link was cut must carry what was written meanwhile as a real TCP connection does —
//! nothing while the link is down, then, once a retransmission gets through, everything
//! queued at once, after which new writes travel with the link's latency again.
//!
//! madsim 0.2.34 as published did not: each message written while the link was clogged
//! waited its own 1 ms backoff and then madsim's 1 ms least delivery time after the heal,
//! and every message queued behind it that 1 ms floor too, so a backlog drained at under
//! 1,000 messages a second — no faster than a busy peer's flush filter writes them. A
//! follower cut off from the leader for 0.7 s (the `one-way` fault) left ~650 acks queued,
//! and its acks reached the leader seconds late for the rest of `election-storm` seed 75
//! (which failed `vacuity`: no quorum read answered after the last faults). The vendored
//! madsim (vendor/README.md) delivers the backlog in one burst.
#![cfg(madsim)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::rt::FlushFilter;
use madsim::net::NetSim;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use common::{two_hosts, RECEIVER};

/// One frame a millisecond for this long: as busy as a peer stream gets (the flush filter
/// sends at most one message a millisecond).
const SEND_FOR: Duration = Duration::from_secs(3);
const CUT_AT: Duration = Duration::from_millis(1000);
const CUT_FOR: Duration = Duration::from_millis(700);

/// Per frame: when it was written and when it was read, from the start of the run.
#[derive(Default)]
struct Log {
    sent: Vec<Duration>,
    received: Vec<Option<Duration>>,
}

async fn run(seed: u64) -> Log {
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Log::default()));
    let (receiver, sender) = two_hosts();
    let rlog = Arc::clone(&log);
    receiver.spawn(async move {
        let listener = TcpListener::bind(RECEIVER).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut frame = [0u8; 4];
        while stream.read_exact(&mut frame).await.is_ok() {
            let seq = u32::from_le_bytes(frame) as usize;
            let mut log = rlog.lock().unwrap();
            if log.received.len() <= seq {
                log.received.resize(seq + 1, None);
            }
            log.received[seq] = Some(start.elapsed());
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let slog = Arc::clone(&log);
    let writer = sender.spawn(async move {
        let stream = TcpStream::connect(RECEIVER).await.unwrap();
        let mut w = FlushFilter::new(stream);
        let mut seq = 0u32;
        while start.elapsed() < SEND_FOR {
            w.write_all(&seq.to_le_bytes()).await.unwrap();
            w.flush().await.unwrap();
            slog.lock().unwrap().sent.push(start.elapsed());
            seq += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // The `one-way` fault: the sender's link to the receiver is cut, the other way stays up.
    tokio::time::sleep_until(start + CUT_AT).await;
    let net = NetSim::current();
    net.clog_link(sender.id(), receiver.id());
    tokio::time::sleep(CUT_FOR).await;
    net.unclog_link(sender.id(), receiver.id());
    writer.await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("seed {seed}: {} frames", log.lock().unwrap().sent.len());
    Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap()
}

fn simulate(seed: u64) -> Log {
    common::simulate(seed, move || run(seed))
}

#[test]
fn a_backlog_written_during_a_partition_drains_at_once_after_the_heal() {
    for seed in [1u64, 2, 3] {
        let log = simulate(seed);
        let heal = CUT_AT + CUT_FOR;
        let frames: Vec<(Duration, Duration)> = log
            .sent
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let r = log.received.get(i).copied().flatten();
                (
                    *s,
                    r.unwrap_or_else(|| panic!("seed {seed}: frame {i} never arrived")),
                )
            })
            .collect();
        let during: Vec<&(Duration, Duration)> = frames
            .iter()
            .filter(|(s, _)| *s > CUT_AT && *s < heal)
            .collect();
        assert!(
            during.len() > 500,
            "seed {seed}: {} frames cut",
            during.len()
        );
        // Nothing crosses a cut link.
        for (s, r) in &during {
            assert!(
                *r >= heal,
                "seed {seed}: a frame sent at {s:?} arrived at {r:?}, cut"
            );
        }
        // The retransmission that gets through carries the whole backlog: the last frame
        // written during the cut arrives no later than a millisecond after the first.
        // Retransmission backs off (madsim: 1 ms, doubling), as TCP's timer does, so the
        // backlog goes within the cut's length after the heal; frames written after that
        // travel as fast as before the cut.
        let first = during.iter().map(|(_, r)| *r).min().unwrap();
        let last = during.iter().map(|(_, r)| *r).max().unwrap();
        let worst = |from: Duration, to: Duration| {
            frames
                .iter()
                .filter(|(s, _)| *s >= from && *s < to)
                .map(|(s, r)| *r - *s)
                .max()
                .unwrap()
        };
        let worst_before = worst(Duration::ZERO, CUT_AT);
        let worst_after = worst(heal + CUT_FOR, SEND_FOR);
        println!(
            "seed {seed}: {} frames written during the cut arrived {:?}..{:?} after the heal; \
             worst latency before the cut {worst_before:?}, from {:?} on {worst_after:?}",
            during.len(),
            first - heal,
            last - heal,
            heal + CUT_FOR,
        );
        assert!(
            last - first <= Duration::from_millis(1),
            "seed {seed}: the backlog took {:?} to drain",
            last - first
        );
        assert!(
            first - heal <= CUT_FOR,
            "seed {seed}: first arrival {first:?}"
        );
        assert!(
            worst_after <= Duration::from_millis(2),
            "seed {seed}: frames written after the backlog left still took {worst_after:?}"
        );
    }
}
