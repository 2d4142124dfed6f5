//! v3 checker benchmark (run with --release): a generated 100,000-operation, 16-client,
//! 16-key history with 5% indeterminate operations and 4 watchers. Prints the median of
//! several runs. `bench_v3 SEED OPS` overrides the seed and the size; `bench_v3 SEED OPS
//! mutate` alters the value read by the last answered Range with a kv (a violation) and
//! times how long the checker takes to report it (`mutate-version`: its version + 1,
//! which only the search can see).

use std::time::{Duration, Instant};

use detcd_checker::v3::{self, gen};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed = args.first().and_then(|s| s.parse().ok()).unwrap_or(42);
    let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let cfg = gen::GenConfig {
        ops: n,
        clients: 16,
        keys: 16,
        indeterminate: 0.05,
        members: 3,
        watchers: 4,
        compact_permille: 2,
    };
    let t = Instant::now();
    let mut h = gen::history(seed, &cfg);
    let gen_time = t.elapsed();
    let mode = args.get(2).map(String::as_str);
    if mode == Some("mutate") || mode == Some("mutate-version") {
        let i = h
            .ops
            .iter()
            .rposition(|o| matches!(&o.outcome, v3::Outcome::Ok(v3::Response::Range(r)) if !r.kvs.is_empty() && !r.kvs[0].value.is_empty()))
            .expect("a read with a value");
        if let v3::Outcome::Ok(v3::Response::Range(r)) = &mut h.ops[i].outcome {
            if mode == Some("mutate") {
                r.kvs[0].value = "never-written".into();
            } else {
                r.kvs[0].version += 1;
            }
        }
        let t = Instant::now();
        let r = v3::check(&h);
        print!("{}", r.render());
        println!(
            "mutated op {}: {:?} in {:.1} ms",
            h.ops[i].id,
            r.verdict,
            t.elapsed().as_secs_f64() * 1e3
        );
        return;
    }
    let mut runs: Vec<Duration> = Vec::new();
    let mut report = None;
    for _ in 0..5 {
        let t = Instant::now();
        let r = v3::check(&h);
        runs.push(t.elapsed());
        report = Some(r);
    }
    let r = report.expect("ran");
    runs.sort();
    print!("{}", r.render());
    assert_eq!(r.verdict, v3::V3Verdict::Ok, "seed {seed}");
    println!(
        "v3 generated (seed {seed}, {n} ops, 16 clients, 16 keys, 5% indeterminate, {} watch events): generated in {:.0} ms; check median {:.1} ms (min {:.1}, max {:.1}; target < 2000 ms)",
        r.watch_events,
        gen_time.as_secs_f64() * 1e3,
        runs[runs.len() / 2].as_secs_f64() * 1e3,
        runs[0].as_secs_f64() * 1e3,
        runs[runs.len() - 1].as_secs_f64() * 1e3
    );
}
