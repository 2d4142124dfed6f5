//! Sweeps that travel: a sweep split into shards (`sweep --shard I/N --out DIR`) and joined
//! with `merge` writes the same report, byte for byte, as the whole sweep on one machine;
//! shards that do not belong together are refused with one line and exit 2; and on a real
//! single-node Slurm (deploy/slurm/), a 4-task array job and its merge job give the same
//! report and failure files as one machine, and a failure file from a shard replays to its
//! recorded digest.

#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sim(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_detcd-sim"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running detcd-sim");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn fresh(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("detcd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every sweep.* file of `a` equals `b`'s.
fn same_reports(a: &Path, b: &Path) {
    for f in ["sweep.json", "sweep.md", "sweep.html"] {
        let x = std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{}: {e}", a.join(f).display()));
        let y = std::fs::read(b.join(f)).unwrap_or_else(|e| panic!("{}: {e}", b.join(f).display()));
        assert!(
            x == y,
            "{f} differs:\n--- {}\n{}\n--- {}\n{}",
            a.display(),
            String::from_utf8_lossy(&x),
            b.display(),
            String::from_utf8_lossy(&y)
        );
    }
}

/// A short scenario whose seeds pass: one leader isolation.
const PASSING: &str = r#"name = "shardable"
[workload]
duration_s = 3.0
clients = 4
keys = 4
watchers = 1
[checks]
liveness_s = 10.0
[[faults]]
at_s = 1.0
duration_s = 1.0
kind = "isolate"
target = "leader"
"#;

/// A short scenario every seed fails: a throughput target no cluster meets.
const FAILING: &str = r#"name = "planted-slurm"
[workload]
duration_s = 3.0
clients = 4
keys = 4
watchers = 1
[targets]
writes_per_sec = 1000000
[checks]
liveness_s = 10.0
[[faults]]
at_s = 1.0
duration_s = 1.0
kind = "crash"
target = "follower"
"#;

#[test]
fn shards_merged_equal_the_one_machine_sweep_and_mismatches_are_refused() {
    let one = fresh("sweep-one");
    let sh = fresh("sweep-shards");
    for d in [&one, &sh] {
        std::fs::write(d.join("shardable.toml"), PASSING).unwrap();
    }
    let whole = sim(
        &one,
        &["sweep", "shardable.toml", "--seeds", "1..6", "--jobs", "2"],
    );
    assert_eq!(whole.code, 0, "{}{}", whole.stdout, whole.stderr);
    for i in 1..=2 {
        let o = sim(
            &sh,
            &[
                "sweep",
                "shardable.toml",
                "--seeds",
                "1..6",
                "--shard",
                &format!("{i}/2"),
                "--out",
                &format!("shards/s{i}"),
            ],
        );
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        assert!(sh.join(format!("shards/s{i}/shard.json")).exists());
        // A shard keeps only failed runs' histories, and here none failed.
        let kept = std::fs::read_dir(sh.join(format!("shards/s{i}/runs")))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(kept, 0, "passing runs were kept in shard {i}");
    }
    // Merged in either order, or from the directory that holds them: the one-machine report.
    let m = sim(&sh, &["merge", "shards/s2", "shards/s1", "--out", "merged"]);
    assert_eq!(m.code, 0, "{}{}", m.stdout, m.stderr);
    same_reports(&one.join("reports/shardable"), &sh.join("merged"));
    let m = sim(&sh, &["merge", "shards", "--expect", "2", "--wait-s", "5"]);
    assert_eq!(m.code, 0, "{}{}", m.stdout, m.stderr);
    same_reports(
        &one.join("reports/shardable"),
        &sh.join("reports/shardable"),
    );

    // Refusals: one line on stderr naming what is wrong, exit 2.
    let refused = |args: &[&str], says: &str| {
        let o = sim(&sh, args);
        assert_eq!(o.code, 2, "{args:?}: {}{}", o.stdout, o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(says), "{args:?}: {}", o.stderr);
    };
    refused(
        &["merge", "shards/s1", "shards/s2", "shards/s1"],
        "shards overlap: seed 1 is in shards/s1 and shards/s1",
    );
    refused(
        &["merge", "shards/s1"],
        "shards leave a gap: seeds 2..3 are in no shard",
    );
    refused(&["merge", "nowhere"], "nowhere/shard.json");
    refused(
        &["merge", "shards", "--expect", "3", "--wait-s", "1"],
        "2 of 3 shards finished",
    );
    // A shard of another scenario file with the same name.
    std::fs::write(
        sh.join("shardable.toml"),
        PASSING.replace("clients = 4", "clients = 5"),
    )
    .unwrap();
    let o = sim(
        &sh,
        &[
            "sweep",
            "shardable.toml",
            "--seeds",
            "6..7",
            "--out",
            "shards-other/s3",
        ],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    refused(
        &["merge", "shards/s1", "shards/s2", "shards-other/s3"],
        "shards ran different versions of scenario shardable",
    );
    std::fs::remove_dir_all(&one).unwrap();
    std::fs::remove_dir_all(&sh).unwrap();
}

/// Stops the throwaway Slurm however the test ends.
struct Slurm(PathBuf);

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(root().join("deploy/slurm/local-slurm"))
            .args(["stop", &self.0.display().to_string()])
            .status();
    }
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_slurm_array_job_sweeps_and_merges_as_one_machine_does() {
    let present = ["munged", "slurmctld", "slurmd", "sbatch", "squeue"]
        .iter()
        .all(|b| have(b));
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !(present && root_user) {
        assert!(
            std::env::var_os("CI").is_none(),
            "a real Slurm needs Debian's slurm-wlm and munge and root (present: {present}, \
             root: {root_user}); CI is set, so this test fails instead of skipping"
        );
        println!("slurm-wlm, munge or root missing: skipped");
        return;
    }
    let one = fresh("slurm-one");
    let b = fresh("slurm-cluster");
    for d in [&one, &b] {
        std::fs::write(d.join("planted-slurm.toml"), FAILING).unwrap();
    }
    let whole = sim(
        &one,
        &[
            "sweep",
            "planted-slurm.toml",
            "--seeds",
            "1..9",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(
        whole.code, 1,
        "every seed fails: {}{}",
        whole.stdout, whole.stderr
    );

    let port = 16_000 + (std::process::id() % 400) as u16 * 2;
    let state = b.join("slurm");
    let up = Command::new(root().join("deploy/slurm/local-slurm"))
        .args(["start", &state.display().to_string(), &port.to_string()])
        .output()
        .expect("deploy/slurm/local-slurm");
    let _guard = Slurm(state.clone());
    assert!(
        up.status.success(),
        "local Slurm did not start: {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let conf = state.join("slurm.conf");
    let submit = Command::new(root().join("deploy/slurm/submit"))
        .args(["planted-slurm.toml", "1..9", "4", "out"])
        .current_dir(&b)
        .env("SLURM_CONF", &conf)
        .env("DETCD_SIM", env!("CARGO_BIN_EXE_detcd-sim"))
        .output()
        .expect("deploy/slurm/submit");
    let said = String::from_utf8_lossy(&submit.stdout).to_string();
    assert!(
        submit.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    println!("{said}");
    // Bounded wait for the array and the merge to leave the queue.
    let start = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-o", "%i %T"])
            .env("SLURM_CONF", &conf)
            .output()
            .expect("squeue");
        let queue = String::from_utf8_lossy(&q.stdout).to_string();
        if q.status.success() && queue.trim().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "Slurm jobs still queued after 600 s:\n{queue}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = || {
        std::fs::read_dir(b.join("out"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".out"))
                    .map(|e| {
                        format!(
                            "== {}\n{}",
                            e.path().display(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        )
                    })
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    for i in 1..=4 {
        assert!(
            b.join(format!("out/shards/shard-{i}/shard.json")).exists(),
            "shard {i} wrote nothing:\n{}",
            logs()
        );
    }
    assert!(
        b.join("out/report/sweep.md").exists(),
        "no merged report:\n{}",
        logs()
    );
    same_reports(&one.join("reports/planted-slurm"), &b.join("out/report"));
    // Every failure file, copied by the merge to failures/, equals the one machine's.
    for seed in 1..9 {
        let f = format!("failures/planted-slurm-{seed}.toml");
        let x = std::fs::read_to_string(one.join(&f)).unwrap();
        let y = std::fs::read_to_string(b.join(&f))
            .unwrap_or_else(|e| panic!("{f} in the Slurm run: {e}\n{}", logs()));
        assert_eq!(x, y, "{f}");
    }
    // A failure file from a shard replays on this machine to its recorded digest.
    let shard_failure = ["1", "2", "3", "4"]
        .iter()
        .map(|i| {
            b.join(format!(
                "out/shards/shard-{i}/failures/planted-slurm-{i}.toml"
            ))
        })
        .find(|p| p.exists())
        .expect("a shard's failure file");
    let r = sim(&one, &["replay", &shard_failure.display().to_string()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("(same as recorded), failure reproduced (throughput)"),
        "{}",
        r.stdout
    );
    drop(_guard);
    std::fs::remove_dir_all(&one).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// deploy/k8s/sweep-job.yaml: the fields the sweep relies on. No cluster runs here, so the
/// manifest is parsed and checked against what the simulator does with it: the Indexed
/// Job's indices partition the seed range, every flag it passes exists, and the merge Job
/// waits for as many shards as there are indices, on the same volume.
#[test]
fn the_kubernetes_indexed_job_runs_every_shard_and_merges_them() {
    use yaml_rust2::{Yaml, YamlLoader};
    let text = std::fs::read_to_string(root().join("deploy/k8s/sweep-job.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("the manifest is YAML");
    let of_kind = |kind: &str, name: &str| -> Yaml {
        docs.iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"))
            .clone()
    };
    let job = of_kind("Job", "detcd-sweep");
    let merge = of_kind("Job", "detcd-sweep-merge");
    let claim = of_kind("PersistentVolumeClaim", "detcd-sweep-out");
    assert_eq!(
        claim["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteMany")
    );
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().expect("completions") as u64;
    assert_eq!(spec["parallelism"].as_i64(), Some(n as i64));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let c = &pod["containers"][0];
    assert_eq!(c["image"].as_str(), Some("detcd-sim:latest"));
    assert_eq!(c["command"][0].as_str(), Some("/usr/local/bin/detcd-sim"));
    let args: Vec<String> = c["args"]
        .as_vec()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect();
    let after = |flag: &str| -> String {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[i + 1].clone()
    };
    assert_eq!(args[0], "sweep");
    // The scenario is in the image at /scenarios, copied from scenarios/.
    let scenario = args[1]
        .strip_prefix("/scenarios/")
        .expect("a scenario under /scenarios");
    assert!(
        root().join("scenarios").join(scenario).exists(),
        "{scenario}"
    );
    assert_eq!(after("--shard"), format!("$(JOB_COMPLETION_INDEX)/{n}"));
    assert!(args.iter().any(|a| a == "--zero-based"), "{args:?}");
    // The indices 0..N-1 partition the seed range.
    let range = after("--seeds");
    let all = detcd_sim::sweep::seeds_of(&range, None, false).unwrap();
    let mut joined: Vec<u64> = (0..n)
        .flat_map(|i| detcd_sim::sweep::seeds_of(&range, Some(&format!("{i}/{n}")), true).unwrap())
        .collect();
    joined.sort();
    assert_eq!(joined, all);
    // Each shard writes under the shared volume, in a directory of its own.
    let mount = c["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("a volume mount")
        .to_string();
    let out = after("--out");
    assert!(out.starts_with(&format!("{mount}/shards/")), "{out}");
    assert!(out.contains("$(JOB_COMPLETION_INDEX)"), "{out}");
    assert_eq!(c["workingDir"].as_str(), Some(mount.as_str()));
    let volume = |pod: &Yaml| {
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(volume(pod).as_deref(), Some("detcd-sweep-out"));
    // Every flag the Job passes is one `sweep` knows.
    let help = sim(&root(), &["sweep", "--help"]).stdout;
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag.as_str()), "`sweep` has no {flag}");
    }
    // The merge Job waits for all N shards on the same volume.
    let mpod = &merge["spec"]["template"]["spec"];
    let m = &mpod["containers"][0];
    let margs: Vec<String> = m["args"]
        .as_vec()
        .expect("merge args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect();
    assert_eq!(margs[0], "merge");
    assert_eq!(margs[1], format!("{mount}/shards"));
    let i = margs
        .iter()
        .position(|a| a == "--expect")
        .expect("--expect");
    assert_eq!(margs[i + 1], n.to_string());
    assert_eq!(volume(mpod).as_deref(), Some("detcd-sweep-out"));
    assert_eq!(
        m["volumeMounts"][0]["mountPath"].as_str(),
        Some(mount.as_str())
    );
    let help = sim(&root(), &["merge", "--help"]).stdout;
    for flag in margs.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag.as_str()), "`merge` has no {flag}");
    }
}
