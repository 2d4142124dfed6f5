//! Every history in tests/data (the checker corpus: real Jepsen histories with Porcupine's
//! verdicts; see tests/data/README.md) gets the verdict in its VERDICTS file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use detcd_checker::model::kv::Kv;
use detcd_checker::model::register::Register;
use detcd_checker::{check, import, Verdict};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn verdicts(dir: &Path) -> Vec<(String, bool)> {
    std::fs::read_to_string(dir.join("VERDICTS"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(f, v)| (f.to_string(), v.trim() == "linearizable"))
        })
        .collect()
}

#[test]
fn jepsen_etcd_register_histories_get_porcupines_verdicts() {
    let root = corpus();
    let dir = root.join("jepsen-etcd");
    let mut n = 0;
    for (file, expect) in verdicts(&dir) {
        let ops = import::jepsen_log(&std::fs::read_to_string(dir.join(&file)).unwrap()).unwrap();
        let t = Instant::now();
        let v = check(
            &Register,
            &ops,
            Some(Instant::now() + Duration::from_secs(60)),
        );
        assert_ne!(v, Verdict::Unknown, "{file}: timed out");
        assert_eq!(
            v == Verdict::Ok,
            expect,
            "{file}: expected linearizable={expect}, got {v:?} ({:?})",
            t.elapsed()
        );
        n += 1;
    }
    assert!(n >= 70, "only {n} histories");
}

#[test]
fn jepsen_kv_histories_get_porcupines_verdicts() {
    let root = corpus();
    let dir = root.join("kv");
    let mut n = 0;
    for (file, expect) in verdicts(&dir) {
        let ops = import::jepsen_edn(&std::fs::read_to_string(dir.join(&file)).unwrap()).unwrap();
        let v = check(&Kv, &ops, Some(Instant::now() + Duration::from_secs(60)));
        assert_ne!(v, Verdict::Unknown, "{file}: timed out");
        assert_eq!(
            v == Verdict::Ok,
            expect,
            "{file}: expected linearizable={expect}, got failure"
        );
        n += 1;
    }
    assert_eq!(n, 6, "kv histories checked");
}

#[test]
fn malformed_lines_are_named() {
    let e = import::jepsen_log(
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - x\t:ok\t:read\t1\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    let e = import::jepsen_edn(
        "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n{:process 0 :type :ok\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    let e = import::native("{\"type\":\"meta\",\"version\":1}\nnot json\n").unwrap_err();
    assert_eq!(e.line, 2);
}
