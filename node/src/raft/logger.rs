//! raft-rs logs through `slog`; detcd logs through `tracing`. This drain forwards one to the
//! other so a member's Raft messages carry its span (and the simulator's per-member filter).

use std::fmt::Write as _;

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

struct KvToString(String);

impl Serializer for KvToString {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// A slog drain that emits each record as a `tracing` event (target `raft`).
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // Formatting a record's values can cost far more than the work it reports: raft-rs
        // logs every message it sends at debug level with the whole message, entries and
        // all, in protobuf's text format (slog lets debug records through wherever debug
        // assertions are on, as in the simulator). Only what a subscriber wants is formatted.
        // (tracing's macros need the level as a constant, hence one arm per level.)
        macro_rules! forward {
            ($level:expr) => {
                if tracing::enabled!(target: "raft", $level) {
                    let mut kv = KvToString(String::new());
                    let _ = record.kv().serialize(record, &mut kv);
                    let _ = values.serialize(record, &mut kv);
                    tracing::event!(target: "raft", $level, "{}{}", record.msg(), kv.0);
                }
            };
        }
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(tracing::Level::ERROR),
            slog::Level::Warning => forward!(tracing::Level::WARN),
            slog::Level::Info => forward!(tracing::Level::INFO),
            slog::Level::Debug => forward!(tracing::Level::DEBUG),
            slog::Level::Trace => forward!(tracing::Level::TRACE),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
