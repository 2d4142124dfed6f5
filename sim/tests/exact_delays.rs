//! Sub-millisecond simulated delays (run with `cargo simtest`): with a scenario's
//! `network.exact_delays` a message arrives at its drawn latency and a busy stream flushes
//! every 100 µs; `detcd_node::rt::sleep_exact` (the simulated fsync's wait) sleeps less than 1 ms.
//! Without it, as madsim is published, every hop costs at least 1 ms.
#![cfg(madsim)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{simulate_with, two_hosts, RECEIVER};

const ROUND_TRIPS: u32 = 200;
const FLUSHES: u32 = 50;

/// What one run measured, in simulated µs.
#[derive(Debug, PartialEq, Clone)]
struct Measured {
    /// Every round trip of one byte over a plain stream (echoed by the receiver).
    round_trips_us: Vec<u64>,
    /// `FLUSHES` writes of one byte through the runtime seam's flush filter, each flushed
    /// before the next.
    flushes_us: u64,
    /// `detcd_node::rt::sleep_exact(150 µs)` and `detcd_node::rt::sleep(150 µs)`.
    sleep_exact_us: u64,
    sleep_us: u64,
}

async fn measure() -> Measured {
    let (receiver, sender) = two_hosts();
    receiver.spawn(async move {
        let listener = TcpListener::bind(RECEIVER).await.unwrap();
        // The echo stream, then the flush-filter stream (read to its end).
        let (mut echo, _) = listener.accept().await.unwrap();
        let mut b = [0u8; 1];
        for _ in 0..ROUND_TRIPS {
            echo.read_exact(&mut b).await.unwrap();
            echo.write_all(&b).await.unwrap();
            echo.flush().await.unwrap();
        }
        let (mut sink, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        sink.read_to_end(&mut all).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    sender
        .spawn(async move {
            let us = |d: Duration| d.as_micros() as u64;
            let mut echo = TcpStream::connect(RECEIVER).await.unwrap();
            let mut round_trips_us = Vec::new();
            let mut b = [1u8; 1];
            for _ in 0..ROUND_TRIPS {
                let t = tokio::time::Instant::now();
                echo.write_all(&b).await.unwrap();
                echo.flush().await.unwrap();
                echo.read_exact(&mut b).await.unwrap();
                round_trips_us.push(us(t.elapsed()));
            }
            let mut sink =
                detcd_node::rt::FlushFilter::new(TcpStream::connect(RECEIVER).await.unwrap());
            let t = tokio::time::Instant::now();
            for _ in 0..FLUSHES {
                sink.write_all(&[2]).await.unwrap();
                sink.flush().await.unwrap();
            }
            let flushes_us = us(t.elapsed());
            drop(sink);
            let t = tokio::time::Instant::now();
            detcd_node::rt::sleep_exact(Duration::from_micros(150)).await;
            let sleep_exact_us = us(t.elapsed());
            let t = tokio::time::Instant::now();
            detcd_node::rt::sleep(Duration::from_micros(150)).await;
            let sleep_us = us(t.elapsed());
            Measured {
                round_trips_us,
                flushes_us,
                sleep_exact_us,
                sleep_us,
            }
        })
        .await
        .unwrap()
}

fn mean(xs: &[u64]) -> u64 {
    xs.iter().sum::<u64>() / xs.len() as u64
}

#[test]
fn exact_delays_take_their_latency_and_the_default_floors_each_hop_at_1_ms() {
    for seed in [1u64, 2] {
        println!("seed {seed}");
        let exact = simulate_with(seed, true, measure);
        let floored = simulate_with(seed, false, measure);
        // Each way 100-500 µs: a round trip 200-1,000 µs, about 600 on average.
        let (lo, hi) = (
            *exact.round_trips_us.iter().min().unwrap(),
            *exact.round_trips_us.iter().max().unwrap(),
        );
        assert!(lo >= 200 && hi <= 1_001, "exact round trips {lo}..{hi} µs");
        assert!(
            (450..=750).contains(&mean(&exact.round_trips_us)),
            "{exact:?}"
        );
        // madsim's floor: each way at least 1 ms.
        assert!(
            floored.round_trips_us.iter().all(|&rt| rt >= 2_000),
            "floored round trips {:?}",
            floored.round_trips_us
        );
        // The flush filter paces flushes 100 µs apart when exact, 1 ms apart otherwise.
        let gaps = u64::from(FLUSHES - 1);
        assert!(
            exact.flushes_us >= gaps * 100 && exact.flushes_us < gaps * 200,
            "{exact:?}"
        );
        assert!(floored.flushes_us >= gaps * 1_000, "{floored:?}");
        // The simulated fsync's wait is exact whatever the network does.
        for m in [&exact, &floored] {
            assert_eq!(m.sleep_exact_us, 150, "{m:?}");
            assert_eq!(m.sleep_us, 1_000, "{m:?}");
        }
        // Same seed, same timings.
        assert_eq!(simulate_with(seed, true, measure), exact);
    }
}
