//! The seed tutorial's microservice pattern with detcd-client.
//!
//! ```sh
//! # a service instance: registers /services/api/a1 with weight 3 under a 5 s TTL
//! cargo run --release -p detcd-client --example registry -- \
//!     --endpoints http://127.0.0.1:2379,http://127.0.0.1:22379 service api a1 10.0.0.5:8080 3
//! # a caller: follows the service and prints which instance each call would go to
//! cargo run --release -p detcd-client --example registry -- \
//!     --endpoints http://127.0.0.1:2379 caller api
//! ```
//!
//! `--for SECONDS` ends either after that long (the service deregisters on the way out).

use std::time::Duration;

use detcd_client::{register, watch_service, Client, Config};

fn usage() -> ! {
    eprintln!(
        "usage: registry [--endpoints URL,...] [--for SECONDS] service NAME INSTANCE ADDR WEIGHT\n       registry [--endpoints URL,...] [--for SECONDS] caller NAME"
    );
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoints = "http://127.0.0.1:2379".to_string();
    let mut run_for: Option<Duration> = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        let value = if args.is_empty() {
            usage()
        } else {
            args.remove(0)
        };
        match flag.as_str() {
            "--endpoints" => endpoints = value,
            "--for" => {
                run_for = Some(Duration::from_secs(
                    value.parse().unwrap_or_else(|_| usage()),
                ))
            }
            _ => usage(),
        }
    }
    let client = Client::new(Config::new(endpoints.split(','))).unwrap_or_else(|e| {
        eprintln!("registry: {e}");
        std::process::exit(2)
    });
    let deadline = async move {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let code = detcd_rt::block_on(async move {
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["service", name, instance, addr, weight] => {
                let weight = weight.parse().unwrap_or_else(|_| usage());
                let reg = match register(
                    &client,
                    name,
                    instance,
                    addr,
                    weight,
                    Duration::from_secs(5),
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("registry: registering: {e}");
                        return 1;
                    }
                };
                println!(
                    "registered {} (weight {weight}); refreshing its 5 s TTL",
                    reg.key()
                );
                deadline.await;
                reg.deregister().await;
                println!("deregistered");
                0
            }
            ["caller", name] => {
                let mut w = match watch_service(&client, name).await {
                    Ok(w) => w,
                    Err(e) => {
                        eprintln!("registry: watching: {e}");
                        return 1;
                    }
                };
                tokio::pin!(deadline);
                loop {
                    let line: Vec<String> = w
                        .instances()
                        .iter()
                        .map(|i| format!("{}={}(w{})", i.name, i.addr, i.weight))
                        .collect();
                    let picks: Vec<String> =
                        (0..10).filter_map(|_| w.pick()).map(|i| i.name).collect();
                    println!(
                        "instances: [{}]  next 10 calls: {}",
                        line.join(" "),
                        picks.join(" ")
                    );
                    tokio::select! {
                        biased;
                        _ = &mut deadline => return 0,
                        ok = w.changed() => if !ok { return 1 },
                    }
                }
            }
            _ => usage(),
        }
    });
    std::process::exit(code);
}
