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
        let wanted = match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            slog::Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
            slog::Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !wanted {
            return Ok(());
        }
        let mut kv = KvToString(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{}", kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
