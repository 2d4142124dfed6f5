//! Checker benchmark (run with --release): the kv c50-ok corpus history, and a generated
//! 100,000-operation, 100-key, 16-client etcd-model history with 5% indeterminate
//! operations. Prints the median of several runs.

use std::time::{Duration, Instant};

use detcd_checker::model::etcd::Etcd;
use detcd_checker::model::kv::Kv;
use detcd_checker::{check, gen, import, Verdict};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kv/c50-ok.txt");
    let text =
        std::fs::read_to_string(&corpus).unwrap_or_else(|e| panic!("{}: {e}", corpus.display()));
    let ops = import::jepsen_edn(&text).expect("corpus parses");
    let runs: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(check(&Kv, &ops, None), Verdict::Ok);
            t.elapsed()
        })
        .collect();
    println!(
        "kv c50-ok ({} ops): median {:.1} ms (Porcupine on this machine: 111 ms)",
        ops.len(),
        median(runs).as_secs_f64() * 1e3
    );
    let ops = gen::etcd_history(42, 100_000, 100, 16, 0.05);
    let runs: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(check(&Etcd, &ops, None), Verdict::Ok);
            t.elapsed()
        })
        .collect();
    println!("etcd generated (100000 ops, 100 keys, 16 clients, 5% indeterminate): median {:.1} ms (target < 1000 ms)", median(runs).as_secs_f64() * 1e3);
}
