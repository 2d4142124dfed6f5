//! The tutorial in containers: builds the `detcd:latest` image (deploy/build-image: a static
//! binary on `scratch`), brings up deploy/compose.yaml (three members on 172.30.0.0/24),
//! runs the tutorial's curl commands against the containers' addresses, kills the leader's
//! container (writes go on), starts it again (it catches up), disconnects a member from the
//! network and reconnects it (it catches up), then tears everything down. Without a Docker
//! engine or Compose it fails under CI (`CI` set) and skips, saying so, elsewhere.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const PROJECT: &str = "detcd-test";
const IPS: [&str; 3] = ["172.30.0.10", "172.30.0.11", "172.30.0.12"];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker compose` (the plugin) or, where only that exists, Debian's `docker-compose`.
fn compose(args: &[&str]) -> Command {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut c = if plugin {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    c.current_dir(root())
        .args(["-p", PROJECT, "-f", "deploy/compose.yaml"])
        .args(args);
    c
}

/// The container id of member `i` (compose v1 and v2 name containers differently).
fn container(i: usize) -> String {
    sh(&mut compose(&["ps", "-q", &format!("autumn-client{i}")]))
}

fn addr(i: usize) -> String {
    format!("{}:2379", IPS[i])
}

/// Tears the compose project down even when the test fails.
struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose(&["down", "-v", "--timeout", "2"]).output();
    }
}

fn leader() -> Option<usize> {
    for i in 0..3 {
        if let Ok(r) = get(&addr(i), "/v2/members/leader") {
            if r.status == 200 {
                let name = r.json()["name"].as_str().unwrap_or("").to_string();
                return (0..3).find(|j| name == format!("autumn-client{j}"));
            }
        }
    }
    None
}

#[test]
fn tutorial_in_containers_survives_kill_and_disconnect() {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("a Docker engine", "`docker info` must answer", engine) {
        return;
    }
    let compose_ok = ["docker compose", "docker-compose"].iter().any(|c| {
        let mut words = c.split(' ');
        Command::new(words.next().unwrap())
            .args(words)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !require(
        "Docker Compose",
        "the `docker compose` plugin or Debian package docker-compose",
        compose_ok,
    ) {
        return;
    }
    let size = sh(Command::new(root().join("deploy/build-image")).current_dir(root()));
    println!("{size}");
    let bytes: u64 = size.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(bytes < 30 << 20, "image is {bytes} bytes");
    let _ = compose(&["down", "-v", "--timeout", "2"]).output();
    let _down = Down;
    sh(&mut compose(&["up", "-d"]));

    // The tutorial's curl commands, against the containers' addresses.
    eventually(Duration::from_secs(60), "three published members", || {
        let r = get(&addr(0), "/v2/members").ok()?;
        (r.body.matches("\"clientURLs\":[\"http").count() == 3).then_some(())
    });
    let lists: Vec<String> = (0..3)
        .map(|i| get(&addr(i), "/v2/members").unwrap().body)
        .collect();
    assert!(lists.iter().all(|l| *l == lists[0]), "{lists:?}");
    let r = form_put(&addr(0), "/v2/keys/message", "value=Hello autumn").unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    eventually(Duration::from_secs(10), "the key on client2", || {
        get(&addr(2), "/v2/keys/message")
            .ok()?
            .body
            .contains("Hello autumn")
            .then_some(())
    });
    // The image's health check sees every member healthy.
    eventually(Duration::from_secs(30), "healthy containers", || {
        let s = sh(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            &container(1),
        ]));
        (s == "healthy").then_some(())
    });

    // Kill the leader's container: the others elect a leader and take writes.
    let l = eventually(Duration::from_secs(20), "a leader", leader);
    sh(Command::new("docker").args(["kill", &container(l)]));
    let other = (l + 1) % 3;
    for i in 0..20 {
        eventually(
            Duration::from_secs(20),
            "a write without the old leader",
            || {
                let r = form_put(&addr(other), &format!("/v2/keys/k{i}"), "value=v").ok()?;
                (r.status == 201 || r.status == 200).then_some(())
            },
        );
    }
    // Start it again: it recovers from its volume and catches up.
    sh(Command::new("docker").args(["start", &container(l)]));
    eventually(
        Duration::from_secs(30),
        "the restarted member to catch up",
        || (get(&addr(l), "/v2/keys/k19").ok()?.status == 200).then_some(()),
    );

    // Disconnect a member from the network: the others go on; reconnected, it catches up.
    let net = format!("{PROJECT}_detcd");
    let cut = (l + 2) % 3;
    sh(Command::new("docker").args(["network", "disconnect", &net, &container(cut)]));
    let live = (cut + 1) % 3;
    eventually(
        Duration::from_secs(30),
        "a write while one member is cut off",
        || {
            let r = form_put(&addr(live), "/v2/keys/during-cut", "value=yes").ok()?;
            (r.status == 201 || r.status == 200).then_some(())
        },
    );
    sh(Command::new("docker").args([
        "network",
        "connect",
        "--ip",
        IPS[cut],
        &net,
        &container(cut),
    ]));
    eventually(
        Duration::from_secs(30),
        "the reconnected member to catch up",
        || (get(&addr(cut), "/v2/keys/during-cut").ok()?.status == 200).then_some(()),
    );
    let r = get(&addr(cut), "/v2/keys/message").unwrap();
    assert!(r.body.contains("Hello autumn"), "{}", r.body);
}
