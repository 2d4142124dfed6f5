//! `detcd-sim check FILE --model register|kv|etcd [--format native|jepsen-log|edn]
//! [--timeout SECS] [--html OUT]`. Exit codes: 0 linearizable (and, for native histories,
//! watch, index and reads checks clean), 1 a violation, 2 unknown (deadline) or bad input.
//!
//! `detcd-checker v3 FILE [--timeout SECS]` (also `check v3 FILE`): the v3 checker
//! ([`crate::v3`]) on a v3 history (JSON lines); same exit codes.

use std::time::{Duration, Instant};

use crate::model::kv::Kv;
use crate::model::register::Register;
use crate::model::Model;
use crate::search::{check, Op, Verdict};

const USAGE: &str = "usage: check FILE --model register|kv|etcd [--format native|jepsen-log|edn] [--timeout SECS] [--html OUT]";

const V3_USAGE: &str = "usage: v3 FILE [--timeout SECS]";

/// Run the `check` command; `args[0]` is "check" (or "v3", or "check" then "v3", for the
/// v3 checker). Returns the exit code.
pub fn cli_main(args: &[String]) -> i32 {
    let first = args.first().map(String::as_str);
    let v3_args = match (first, args.get(1).map(String::as_str)) {
        (Some("v3"), _) => Some(&args[1..]),
        (Some("check"), Some("v3")) => Some(&args[2..]),
        _ => None,
    };
    let result = match v3_args {
        Some(rest) => run_v3(rest),
        None => run(args),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("check: {msg}");
            2
        }
    }
}

fn run_v3(args: &[String]) -> Result<i32, String> {
    let mut file = None;
    let mut timeout = 60.0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout" => {
                timeout = it
                    .next()
                    .ok_or_else(|| format!("--timeout needs a value\n{V3_USAGE}"))?
                    .parse::<f64>()
                    .map_err(|_| "--timeout: not a number".to_string())?
            }
            "-h" | "--help" => {
                println!("{V3_USAGE}");
                return Ok(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{V3_USAGE}")),
            s => {
                if file.replace(s.to_string()).is_some() {
                    return Err(format!("one FILE only\n{V3_USAGE}"));
                }
            }
        }
    }
    let file = file.ok_or_else(|| format!("no FILE\n{V3_USAGE}"))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let h = crate::v3::History::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    let started = Instant::now();
    let report = crate::v3::check_with(
        &h,
        crate::v3::Limits {
            deadline: Some(started + Duration::from_secs_f64(timeout)),
            ..crate::v3::Limits::default()
        },
    );
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    print!("{}", report.render());
    println!("{file}: checked in {ms:.1} ms");
    Ok(match report.verdict {
        crate::v3::V3Verdict::Ok => 0,
        crate::v3::V3Verdict::Violations => 1,
        crate::v3::V3Verdict::Unknown => 2,
    })
}

fn run(args: &[String]) -> Result<i32, String> {
    let mut file = None;
    let mut model = None;
    let mut format = None;
    let mut timeout = 60.0;
    let mut html_out = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--model" => model = Some(val("--model")?),
            "--format" => format = Some(val("--format")?),
            "--timeout" => {
                timeout = val("--timeout")?
                    .parse::<f64>()
                    .map_err(|_| "--timeout: not a number".to_string())?
            }
            "--html" => html_out = Some(val("--html")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => {
                if file.replace(s.to_string()).is_some() {
                    return Err(format!("one FILE only\n{USAGE}"));
                }
            }
        }
    }
    let file = file.ok_or_else(|| format!("no FILE\n{USAGE}"))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let format = format.unwrap_or_else(|| detect(&text).to_string());
    let model = model.unwrap_or_else(|| match format.as_str() {
        "edn" => "kv".into(),
        "jepsen-log" => "register".into(),
        _ => "etcd".into(),
    });
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let started = Instant::now();
    let (verdict, html, extra) = match (model.as_str(), format.as_str()) {
        ("register", "jepsen-log") => {
            let ops = crate::import::jepsen_log(&text).map_err(|e| format!("{file}: {e}"))?;
            simple(&Register, &ops, deadline)
        }
        ("kv", "edn") => {
            let ops = crate::import::jepsen_edn(&text).map_err(|e| format!("{file}: {e}"))?;
            simple(&Kv, &ops, deadline)
        }
        ("etcd", "native") => {
            let r = crate::check_etcd_history(&text, Duration::from_secs_f64(timeout), "/k").map_err(|e| format!("{file}: {e}"))?;
            let mut extra = r.index_violations.clone();
            extra.extend(r.watch_violations.clone());
            extra.extend(r.reads.violations.clone());
            (r.verdict, r.html, extra)
        }
        (m, f) => return Err(format!("model {m:?} does not read the {f:?} format (register: jepsen-log, kv: edn, etcd: native)")),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(out) = html_out {
        let page = if html.is_empty() {
            crate::html::page("linearizable", "every partition linearizable", &[])
        } else {
            html.clone()
        };
        std::fs::write(&out, page).map_err(|e| format!("{out}: {e}"))?;
    }
    for v in &extra {
        println!("violation: {v}");
    }
    Ok(match verdict {
        Verdict::Ok if extra.is_empty() => {
            println!("{file}: linearizable ({ms:.1} ms)");
            0
        }
        Verdict::Ok => {
            println!(
                "{file}: linearizable, but {} other violation(s) ({ms:.1} ms)",
                extra.len()
            );
            1
        }
        Verdict::Illegal(f) => {
            println!(
                "{file}: NOT linearizable: {} failing partition(s) ({ms:.1} ms)",
                f.len()
            );
            1
        }
        Verdict::Unknown => {
            println!("{file}: unknown: the search did not finish within {timeout} s");
            2
        }
    })
}

type Checked = (Verdict, String, Vec<String>);

fn simple<M: Model>(m: &M, ops: &[Op<M::Input, M::Output>], deadline: Instant) -> Checked {
    let v = check(m, ops, Some(deadline));
    let html = match &v {
        Verdict::Illegal(f) => {
            for fail in f {
                print!("{}", crate::describe_failure(m, ops, fail));
            }
            crate::failure_html(m, ops, f, &[])
        }
        _ => String::new(),
    };
    (v, html, vec![])
}

fn detect(text: &str) -> &'static str {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.trim_start().starts_with("{\"") {
        "native"
    } else if first.trim_start().starts_with("{:") {
        "edn"
    } else {
        "jepsen-log"
    }
}
