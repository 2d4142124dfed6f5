//! Logging through tracing-subscriber: text or JSON, to stderr, stdout or a file. Only the
//! real `main` installs it (the simulator installs its own subscriber).

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Install the global subscriber for the `detcd` process. `RUST_LOG` overrides
/// `--log-level`.
pub fn init(cfg: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},raft=warn", cfg.log_level)))
        .map_err(|e| format!("--log-level {:?}: {e}", cfg.log_level))?;
    let out = cfg
        .log_outputs
        .first()
        .map(String::as_str)
        .unwrap_or("default");
    let json = cfg.log_format == "json";
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match out {
        "default" | "stderr" => {
            if json {
                builder.json().with_writer(std::io::stderr).try_init()
            } else {
                // Colours only on a terminal (not in container logs or files).
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                builder
                    .with_ansi(tty)
                    .with_writer(std::io::stderr)
                    .try_init()
            }
        }
        "stdout" => {
            if json {
                builder.json().with_writer(std::io::stdout).try_init()
            } else {
                let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
                builder
                    .with_ansi(tty)
                    .with_writer(std::io::stdout)
                    .try_init()
            }
        }
        path => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-outputs {path}: {e}"))?;
            let file = Mutex::new(file);
            if json {
                builder.json().with_ansi(false).with_writer(file).try_init()
            } else {
                builder.with_ansi(false).with_writer(file).try_init()
            }
        }
    };
    result.map_err(|e| format!("installing the logger: {e}"))
}
