//! A v2 write load generator for benchmarks (not a test): N client threads, each on one
//! keep-alive HTTP/1.1 connection to one of the endpoints (round-robin), PUT unique keys for
//! a fixed time; prints one JSON line: writes/s, p50/p99/max latency, errors.
//!
//! `cargo run --release -p detcd-node --example loadgen -- --endpoints 127.0.0.1:2379,... \
//!     --clients 16 --seconds 10`
//!
//! With `--until-ok-after-ms T` it instead measures unavailability: it reports the longest
//! gap between consecutive successful writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

struct Conn {
    addr: String,
    r: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn put(&mut self, path: &str, body: &str) -> Result<u16, String> {
        if self.r.is_none() {
            let s = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            self.r = Some(BufReader::new(s));
        }
        let r = self.r.as_mut().unwrap();
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let res = (|| -> std::io::Result<u16> {
            r.get_mut().write_all(req.as_bytes())?;
            let mut line = String::new();
            r.read_line(&mut line)?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut len = 0usize;
            let mut chunked = false;
            loop {
                let mut h = String::new();
                r.read_line(&mut h)?;
                let t = h.trim_end();
                if t.is_empty() {
                    break;
                }
                let lower = t.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                    chunked = true;
                }
            }
            if chunked {
                loop {
                    let mut sz = String::new();
                    r.read_line(&mut sz)?;
                    let n = usize::from_str_radix(sz.trim(), 16).unwrap_or(0);
                    let mut buf = vec![0u8; n + 2];
                    r.read_exact(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                }
            } else {
                let mut buf = vec![0u8; len];
                r.read_exact(&mut buf)?;
            }
            Ok(status)
        })();
        match res {
            Ok(s) => Ok(s),
            Err(e) => {
                self.r = None;
                Err(e.to_string())
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoints: Vec<String> = arg(&args, "--endpoints", "127.0.0.1:2379")
        .split(',')
        .map(str::to_string)
        .collect();
    let clients: usize = arg(&args, "--clients", "1").parse().expect("--clients");
    let seconds: f64 = arg(&args, "--seconds", "10").parse().expect("--seconds");
    let prefix = arg(&args, "--prefix", "bench");
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let oks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut threads = Vec::new();
    for c in 0..clients {
        let (stop, hist, oks, errors) = (stop.clone(), hist.clone(), oks.clone(), errors.clone());
        let addr = endpoints[c % endpoints.len()].clone();
        let prefix = prefix.clone();
        threads.push(std::thread::spawn(move || {
            let mut conn = Conn { addr, r: None };
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut times = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let t = Instant::now();
                match conn.put(
                    &format!("/v2/keys/{prefix}/c{c}/{seq}"),
                    "value=0123456789abcdef",
                ) {
                    Ok(s) if (200..300).contains(&s) => {
                        let _ = local.record((t.elapsed().as_micros() as u64).max(1));
                        times.push(Instant::now());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            hist.lock().unwrap().add(&local).unwrap();
            oks.lock().unwrap().extend(times);
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = hist.lock().unwrap();
    let mut times = oks.lock().unwrap().clone();
    times.sort();
    let max_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "{{\"clients\":{clients},\"writes\":{},\"writes_per_sec\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"errors\":{},\"max_gap_s\":{:.3}}}",
        h.len(),
        h.len() as f64 / elapsed,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        errors.load(Ordering::Relaxed),
        max_gap.as_secs_f64()
    );
}
