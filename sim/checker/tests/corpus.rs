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

#[test]
fn jepsen_logs_with_spaces_between_columns_read_like_tabs() {
    // A log whose columns are separated by spaces, as some of Jepsen's own logs are: one
    // space, several, or a mix with tabs, and a cas value that itself contains a space.
    let spaced = "INFO  jepsen.util - 0 :invoke :write 1\n\
                  INFO  jepsen.util - 0 :ok :write 1\n\
                  INFO  jepsen.util - 1    :invoke\t:cas   [1 2]\n\
                  INFO  jepsen.util - 1 :ok :cas [1 2]\n\
                  INFO  jepsen.util - 2 :invoke :read nil\n\
                  INFO  jepsen.util - 2 :ok :read 2\n\
                  INFO  jepsen.util - 3 :invoke :cas [0 4]\n\
                  INFO  jepsen.util - 3 :fail :cas [0 4]\n\
                  INFO  jepsen.util - 4 :invoke :write 3\n\
                  INFO  jepsen.util - 4 :info :write :timed-out indeterminate: timed out\n";
    let ops = import::jepsen_log(spaced).unwrap();
    let tabbed = spaced
        .lines()
        .map(|l| {
            let (head, cols) = l.split_once(" - ").unwrap();
            let cols: Vec<&str> = cols.split_whitespace().collect();
            // Jepsen's own layout: process, type, f, value ("[1 2]" keeps its space), error.
            let value_end = if cols[3].starts_with('[') { 5 } else { 4 };
            let mut out = format!("{head} - {}", cols[..3].join("\t"));
            out.push('\t');
            out.push_str(&cols[3..value_end].join(" "));
            if value_end < cols.len() {
                out.push('\t');
                out.push_str(&cols[value_end..].join(" "));
            }
            out + "\n"
        })
        .collect::<String>();
    assert!(tabbed.contains(":cas\t[1 2]\n"), "{tabbed}");
    assert_eq!(
        format!("{ops:?}"),
        format!("{:?}", import::jepsen_log(&tabbed).unwrap())
    );
    assert_eq!(ops.len(), 5, "{ops:?}");
    assert_eq!(check(&Register, &ops, None), Verdict::Ok);

    // A whole corpus history with every tab turned into spaces gets the same operations.
    let dir = corpus().join("jepsen-etcd");
    let text = std::fs::read_to_string(dir.join("etcd_000.log")).unwrap();
    let spaced = text.replace('\t', "  ");
    assert_eq!(
        format!("{:?}", import::jepsen_log(&text).unwrap()),
        format!("{:?}", import::jepsen_log(&spaced).unwrap())
    );

    // Too few columns is still an error that names the line.
    let e =
        import::jepsen_log("INFO  jepsen.util - 0 :invoke :read nil\nINFO  jepsen.util - 0 :ok\n")
            .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("found 2"), "{e}");
}
