//! The simulated TCP stream's buffers are bounded as a real connection's are (run with
//! `cargo simtest`): a writer whose reader does not read blocks once
//! `madsim::net::TCP_WINDOW_BYTES` are written and unread, goes on as the reader reads, and
//! fails once the reader is gone.
//!
//! madsim 0.2.34 as published took every write at once, so a member writing to a peer behind
//! a partition never blocked: its backlog grew without end (the transport's write timeout
//! never fired in a simulated run), and after the heal the peer worked through all of it.
//! The vendored madsim (vendor/README.md) bounds it.
#![cfg(madsim)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::TCP_WINDOW_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{two_hosts, RECEIVER};

const CHUNK: usize = 64 << 10;

/// What the writer saw: bytes the stream took, at three moments, and how its last write
/// ended.
#[derive(Debug, PartialEq)]
struct Seen {
    taken_unread: usize,
    taken_after_read: usize,
    read: usize,
    ended: String,
}

async fn run() -> Seen {
    let (receiver, sender) = two_hosts();
    let read_now = Arc::new(tokio::sync::Notify::new());
    let drop_now = Arc::new(tokio::sync::Notify::new());
    let read = Arc::new(AtomicUsize::new(0));
    let (r_read_now, r_drop_now, r_read) = (read_now.clone(), drop_now.clone(), read.clone());
    receiver.spawn(async move {
        let listener = TcpListener::bind(RECEIVER).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        // Read nothing until told; then 1 MiB; then hold the stream until told to drop it.
        r_read_now.notified().await;
        let mut buf = vec![0u8; 1 << 20];
        stream.read_exact(&mut buf).await.unwrap();
        r_read.store(buf.len(), Ordering::SeqCst);
        r_drop_now.notified().await;
        drop(stream);
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let w_taken = taken.clone();
    let writer = sender.spawn(async move {
        let mut stream = TcpStream::connect(RECEIVER).await.unwrap();
        let chunk = vec![7u8; CHUNK];
        // Bounded: a stream that took this much has no window (the test fails).
        while w_taken.load(Ordering::SeqCst) < 4 * TCP_WINDOW_BYTES {
            // Partial writes count as they are taken.
            let n = match stream.write(&chunk).await {
                Ok(n) => n,
                Err(e) => return e.kind(),
            };
            w_taken.fetch_add(n, Ordering::SeqCst);
            if let Err(e) = stream.flush().await {
                return e.kind();
            }
            tokio::task::yield_now().await;
        }
        std::io::ErrorKind::Other
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let taken_unread = taken.load(Ordering::SeqCst);
    read_now.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let taken_after_read = taken.load(Ordering::SeqCst);
    drop_now.notify_one();
    let ended = tokio::time::timeout(Duration::from_secs(1), writer)
        .await
        .map(|k| format!("{:?}", k.unwrap()))
        .unwrap_or_else(|_| "still blocked".into());
    Seen {
        taken_unread,
        taken_after_read,
        read: read.load(Ordering::SeqCst),
        ended,
    }
}

#[test]
fn a_writer_blocks_at_the_window_goes_on_as_the_reader_reads_and_fails_when_it_leaves() {
    for seed in [1u64, 2] {
        let seen = common::simulate(seed, run);
        println!("seed {seed}: {seen:?}");
        assert_eq!(
            seen,
            Seen {
                taken_unread: TCP_WINDOW_BYTES,
                taken_after_read: TCP_WINDOW_BYTES + (1 << 20),
                read: 1 << 20,
                ended: "ConnectionReset".into(),
            },
            "seed {seed}"
        );
    }
}
