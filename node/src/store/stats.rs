//! `/v2/stats/store` counters, with etcd's names and order.

use serde::{Deserialize, Serialize};

use super::error::EtcdError;
use super::watch::Event;
use super::{Command, WriteMethod};

/// Success and failure counts per operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    gets_success: u64,
    gets_fail: u64,
    sets_success: u64,
    sets_fail: u64,
    delete_success: u64,
    delete_fail: u64,
    update_success: u64,
    update_fail: u64,
    create_success: u64,
    create_fail: u64,
    cas_success: u64,
    cas_fail: u64,
    cad_success: u64,
    cad_fail: u64,
    /// Keys expired.
    pub expire_count: u64,
}

impl Stats {
    /// Count a get.
    pub fn count_get(&mut self, ok: bool) {
        if ok {
            self.gets_success += 1;
        } else {
            self.gets_fail += 1;
        }
    }

    /// Count a write by the store operation it maps to.
    pub fn count(&mut self, c: &Command, r: &Result<Event, EtcdError>) {
        let ok = r.is_ok();
        let cmp = c.prev_index > 0 || !c.prev_value.is_empty();
        let (s, f) = match (c.method, c.prev_exist) {
            (WriteMethod::Post, _) | (WriteMethod::Put, Some(false)) => {
                (&mut self.create_success, &mut self.create_fail)
            }
            (WriteMethod::Put, Some(true)) if !cmp => {
                (&mut self.update_success, &mut self.update_fail)
            }
            (WriteMethod::Put, _) if cmp => (&mut self.cas_success, &mut self.cas_fail),
            (WriteMethod::Put, _) => (&mut self.sets_success, &mut self.sets_fail),
            (WriteMethod::Delete, _) if cmp => (&mut self.cad_success, &mut self.cad_fail),
            (WriteMethod::Delete, _) => (&mut self.delete_success, &mut self.delete_fail),
        };
        if ok {
            *s += 1;
        } else {
            *f += 1;
        }
    }

    /// etcd's JSON (no trailing newline).
    pub fn to_json(&self, watchers: usize) -> String {
        format!(
            "{{\"getsSuccess\":{},\"getsFail\":{},\"setsSuccess\":{},\"setsFail\":{},\"deleteSuccess\":{},\"deleteFail\":{},\"updateSuccess\":{},\"updateFail\":{},\"createSuccess\":{},\"createFail\":{},\"compareAndSwapSuccess\":{},\"compareAndSwapFail\":{},\"compareAndDeleteSuccess\":{},\"compareAndDeleteFail\":{},\"expireCount\":{},\"watchers\":{}}}",
            self.gets_success, self.gets_fail, self.sets_success, self.sets_fail, self.delete_success, self.delete_fail,
            self.update_success, self.update_fail, self.create_success, self.create_fail, self.cas_success, self.cas_fail,
            self.cad_success, self.cad_fail, self.expire_count, watchers
        )
    }
}
