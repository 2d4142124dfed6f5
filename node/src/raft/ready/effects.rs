//! How the loop narrates its effects to a listening [`crate::rt::Probe`] (the golden-trace
//! test): one line per WAL write, message sent, entry applied, request answered.

use raft::eraftpb::{Entry, HardState, Message};

/// A WAL write: its entries, its hard state, whether it was fsynced.
pub(super) fn wal_write(entries: &[Entry], hs: Option<&HardState>, synced: bool) -> String {
    let mut w = String::from("write the WAL:");
    if let (Some(a), Some(b)) = (entries.first(), entries.last()) {
        w.push_str(&format!(" entries {}..={}", a.index, b.index));
    }
    if let Some(hs) = hs {
        w.push_str(&format!(
            " hard state (term {}, vote {}, commit {})",
            hs.term, hs.vote, hs.commit
        ));
    }
    if synced {
        w.push_str("; fsync");
    }
    w
}

/// A message handed to the transport.
pub(super) fn send(m: &Message) -> String {
    format!(
        "send {:?} to {} (term {}, index {}, commit {}, {} entries{})",
        m.get_msg_type(),
        m.to,
        m.term,
        m.index,
        m.commit,
        m.entries.len(),
        if m.reject { ", reject" } else { "" }
    )
}
