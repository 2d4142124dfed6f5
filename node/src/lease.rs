//! The leader's half of etcd 3.4's lessor (`lease/lessor.go`): lease deadlines, in memory.
//!
//! Which leases exist is replicated state (the keyspace's `lease` table, see
//! [`crate::mvcc::Mvcc::lease_grant`]); when each expires is not: as in etcd, only the leader
//! (the "primary" lessor) keeps deadlines, renews them on KeepAlive, and expires a lease by
//! proposing its revocation through Raft. A member that becomes leader starts every lease's
//! deadline afresh at now + TTL + the election timeout (etcd's `Promote(electionTimeout)`), so
//! a lease may expire late after a leader change, never early. A follower keeps no deadlines.
//!
//! Time comes from the member's clock seam only, passed in by the caller; this type holds no
//! clock, thread or randomness.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rt::Instant;

/// Deadlines of the leases this member (as leader) is expiring.
#[derive(Debug, Default)]
pub struct Lessor {
    /// The term in which this member was leader at the last [`Lessor::tick`] (None: it was
    /// not). Leadership lost and won again between two ticks is a new term: the deadlines
    /// start afresh, since another leader may have renewed leases meanwhile.
    primary: Option<u64>,
    /// Lease ID → deadline.
    deadlines: BTreeMap<i64, Instant>,
    /// Leases whose revocation was proposed, and when it may be proposed again.
    revoking: BTreeMap<i64, Instant>,
}

/// How long an expired lease's revocation is left to complete before it is proposed again.
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// Expired leases revoked per second at most (etcd's `leaseRevokeRate`): a burst of expiries
/// is spread over ticks rather than proposed at once.
pub const REVOKE_RATE: usize = 1000;

/// Revocations proposed per [`Lessor::tick`] at most: the lease tick runs every 500 ms, so
/// half the rate (etcd's `revokeLimit := leaseRevokeRate / 2`).
pub const REVOKE_PER_TICK: usize = REVOKE_RATE / 2;

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// A lessor that is not primary yet.
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// Whether it keeps deadlines for `term` (this member was leader in it at the last tick).
    pub fn is_primary_in(&self, term: u64) -> bool {
        self.primary == Some(term)
    }

    /// Bring the deadlines in line with leadership and the replicated lease set `leases`
    /// ((ID, TTL), as of now) and answer the leases to revoke now, by ID.
    ///
    /// - not leader (`leader_term` None): no deadlines (etcd's `Demote`);
    /// - just became leader (or leader in a new term): every lease's deadline is now + TTL +
    ///   `extend` (`Promote`);
    /// - a lease granted since the last tick: now + TTL (granted at most a tick ago: late,
    ///   never early); a lease gone: forgotten;
    /// - a lease past its deadline whose revocation was not proposed in the last
    ///   [`REVOKE_RETRY`]: to revoke, soonest deadline first, at most [`REVOKE_PER_TICK`]
    ///   (etcd's `findExpiredLeases(revokeLimit)` over its expiry heap); the rest wait for
    ///   the next tick.
    pub fn tick(
        &mut self,
        now: Instant,
        leader_term: Option<u64>,
        leases: &[(i64, i64)],
        extend: Duration,
    ) -> Vec<i64> {
        if leader_term.is_none() {
            self.primary = None;
            self.deadlines.clear();
            self.revoking.clear();
            return Vec::new();
        }
        let promoted = self.primary != leader_term;
        if promoted {
            self.revoking.clear();
        }
        self.primary = leader_term;
        let mut deadlines = BTreeMap::new();
        for &(id, ttl) in leases {
            let d = match self.deadlines.get(&id) {
                Some(d) if !promoted => *d,
                _ if promoted => now + secs(ttl) + extend,
                _ => now + secs(ttl),
            };
            deadlines.insert(id, d);
        }
        self.deadlines = deadlines;
        if promoted && self.deadlines.len() >= REVOKE_RATE {
            self.spread(now);
        }
        self.revoking
            .retain(|id, retry| self.deadlines.contains_key(id) && *retry > now);
        let mut due: Vec<(Instant, i64)> = (self.deadlines.iter())
            .filter(|(id, d)| **d <= now && !self.revoking.contains_key(id))
            .map(|(&id, &d)| (d, id))
            .collect();
        due.sort_unstable();
        due.truncate(REVOKE_PER_TICK);
        let expired: Vec<i64> = due.into_iter().map(|(_, id)| id).collect();
        for &id in &expired {
            self.revoking.insert(id, now + REVOKE_RETRY);
        }
        expired
    }

    /// At a promotion with [`REVOKE_RATE`] leases or more, etcd's `Promote` pushes back
    /// deadlines that pile up, so that about 3/4 of the revocation rate falls due per window
    /// (not a strict bound over every sliding second, in etcd either) and leases that were
    /// renewed a moment apart on the old leader do not all expire in one burst on the new
    /// one: deadlines are taken soonest first, a
    /// window opens at a deadline past the current one's end (initially one second long),
    /// and the n-th deadline of a window past its first 750 moves to the window's start +
    /// n/750 s, the window's end then following it. Only ever later, never earlier.
    fn spread(&mut self, now: Instant) {
        const TARGET: usize = (3 * REVOKE_RATE) / 4;
        let mut by_deadline: Vec<(Instant, i64)> =
            self.deadlines.iter().map(|(&id, &d)| (d, id)).collect();
        by_deadline.sort_unstable();
        let Some(&(first, _)) = by_deadline.first() else {
            return;
        };
        // Remaining times as signed nanoseconds (etcd's `Remaining()`), from `now`.
        let left = |d: Instant| d.saturating_duration_since(now).as_nanos() as i128;
        let mut base = left(first);
        let mut next = base + 1_000_000_000;
        let mut expires = 0usize;
        for (d, id) in by_deadline {
            let remaining = left(d);
            if remaining > next {
                base = remaining;
                next = base + 1_000_000_000;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= TARGET {
                continue;
            }
            let delay = (1e9 * (expires as f64 / TARGET as f64)) as i128 - (remaining - base);
            next = base + delay;
            debug_assert!(delay > 0, "a spread deadline moves later");
            let delay = Duration::from_nanos(delay.max(0) as u64);
            // etcd's `refresh(delay + extend)`: now + TTL + extend (the deadline just set) + delay.
            self.deadlines.insert(id, d + delay);
        }
    }

    /// KeepAlive on the leader (`lessor.Renew`): the deadline becomes now + `ttl` and the
    /// answer is `Some(ttl)`; None when the lease already expired: its revocation is under
    /// way, and etcd's `Renew` waits for it (or for the demotion) before it answers "not
    /// found", which KeepAlive reports as TTL 0.
    pub fn renew(&mut self, id: i64, ttl: i64, now: Instant) -> Option<i64> {
        if let Some(d) = self.deadlines.get(&id) {
            if *d <= now {
                return None;
            }
        }
        self.deadlines.insert(id, now + secs(ttl));
        Some(ttl)
    }

    /// Seconds left of lease `id` (etcd's `int64(Remaining().Seconds())`, truncated), or `ttl`
    /// when no deadline is known yet (granted since the last tick).
    pub fn remaining(&self, id: i64, ttl: i64, now: Instant) -> i64 {
        match self.deadlines.get(&id) {
            Some(d) => d.saturating_duration_since(now).as_secs() as i64,
            None => ttl,
        }
    }

    /// A grant applied (by the Ready loop, on every member): while primary its deadline
    /// starts now (etcd's `Grant` on the primary lessor: `refresh(0)`), whoever proposed it.
    /// A lease revoked and granted again under the same ID between two ticks gets a fresh
    /// deadline this way, not the old lease's.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        if self.primary.is_some() {
            self.deadlines.insert(id, now + secs(ttl));
            self.revoking.remove(&id);
        }
    }

    /// Lease IDs in etcd's `Leases()` order: by time left, soonest first (`leasesByExpiry`);
    /// a lease without a deadline (every lease, on a follower) counts as never expiring.
    /// Ties keep the order given.
    pub fn by_expiry(&self, ids: &mut [i64]) {
        ids.sort_by_key(|id| match self.deadlines.get(id) {
            Some(d) => (0, Some(*d)),
            None => (1, None),
        });
    }

    /// A revocation applied: the lease's deadline, and its pending revocation, are gone.
    pub fn revoked(&mut self, id: i64) {
        self.deadlines.remove(&id);
        self.revoking.remove(&id);
    }
}

/// etcd's minimum lease TTL in seconds (`minTTL` in `etcdserver/server.go`:
/// `(3*ElectionTicks)/2` heartbeats, rounded up to whole seconds), where the election timeout
/// counts whole heartbeats (`ElectionTicks = ElectionMs / TickMs`). Both divisions are
/// integer ones: 100 ms / 1000 ms gives 2 s; 100 ms / 2050 ms gives 3 s (20 ticks, 30
/// heartbeats), not the 4 s that 1.5 x 2050 ms rounded up would be.
pub fn min_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let ticks = election_ms / heartbeat_ms.max(1);
    let ms = (3 * ticks / 2) * heartbeat_ms;
    ms.div_ceil(1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Duration = Duration::from_secs(1);
    // The tests hand the lessor instants themselves (a base reading plus offsets): the
    // lessor never reads a clock, so std's clock here is only an origin.

    #[test]
    fn min_ttl_counts_whole_heartbeats_as_etcd() {
        // Defaults: 10 ticks of 100 ms, 15 heartbeats, 1.5 s, 2 s.
        assert_eq!(min_ttl(100, 1000), 2);
        assert_eq!(min_ttl(10, 100), 1);
        assert_eq!(min_ttl(100, 2000), 3);
        // 20 ticks (the 50 ms left over count for nothing): 3 s, not ceil(3.075 s) = 4.
        assert_eq!(min_ttl(100, 2050), 3);
        // 7 ticks of 300 ms: (3 * 7) / 2 = 10 heartbeats, 3 s (not ceil(3.15 s) = 4).
        assert_eq!(min_ttl(300, 2100), 3);
        // 21 ticks: 31 heartbeats, 3.1 s, 4 s.
        assert_eq!(min_ttl(100, 2100), 4);
    }

    #[test]
    fn lease_expiry_only_on_the_leader_and_late_after_promotion() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        let leases = [(1, 5), (2, 10)];
        // A follower keeps nothing and expires nothing.
        assert!(l.tick(t0 + secs(100), None, &leases, E).is_empty());
        assert!(!l.is_primary_in(1));
        assert_eq!(l.remaining(1, 5, t0), 5);
        // Promoted at t0: deadlines t0 + TTL + election timeout.
        assert!(l.tick(t0, Some(1), &leases, E).is_empty());
        assert!(l.is_primary_in(1));
        assert_eq!(l.remaining(1, 5, t0), 6);
        assert!(l.tick(t0 + secs(5), Some(1), &leases, E).is_empty());
        assert_eq!(l.tick(t0 + secs(6), Some(1), &leases, E), vec![1]);
        // Proposed once, not again until REVOKE_RETRY passed.
        assert!(l.tick(t0 + secs(7), Some(1), &leases, E).is_empty());
        assert_eq!(l.tick(t0 + secs(9), Some(1), &leases, E), vec![1]);
        // Revoked: gone from the set, forgotten; lease 2 expires at 11.
        assert!(l.tick(t0 + secs(10), Some(1), &leases[1..], E).is_empty());
        assert_eq!(l.tick(t0 + secs(11), Some(1), &leases[1..], E), vec![2]);
    }

    /// etcd's `Revoke` deletes the lease and `Grant` makes a new one whose expiry starts at
    /// the grant: an ID revoked and granted again between two ticks must not keep the old
    /// lease's deadline (it expired early: review of session 27).
    #[test]
    fn a_lease_granted_again_under_a_revoked_id_gets_a_fresh_deadline() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        assert!(l.tick(t0, Some(1), &[(100, 60)], E).is_empty());
        // At t0 + 50 s the lease is revoked and granted again (both applied between ticks).
        l.revoked(100);
        l.granted(100, 60, t0 + secs(50));
        assert_eq!(l.remaining(100, 60, t0 + secs(50)), 60);
        assert!(l.tick(t0 + secs(50), Some(1), &[(100, 60)], E).is_empty());
        // Not expired when the old lease would have been.
        assert!(l.tick(t0 + secs(62), Some(1), &[(100, 60)], E).is_empty());
        assert_eq!(l.remaining(100, 60, t0 + secs(62)), 48);
        assert_eq!(l.tick(t0 + secs(110), Some(1), &[(100, 60)], E), vec![100]);
        // A revocation pending for the old lease does not hold back the new one's.
        l.granted(100, 5, t0 + secs(111));
        assert_eq!(l.tick(t0 + secs(116), Some(1), &[(100, 5)], E), vec![100]);
    }

    #[test]
    fn leases_are_listed_soonest_expiry_first_as_etcd() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        let mut ids = vec![1, 5, 9];
        // A follower: no deadlines, the order given (by ID).
        l.by_expiry(&mut ids);
        assert_eq!(ids, vec![1, 5, 9]);
        l.tick(t0, Some(1), &[(1, 600), (5, 60), (9, 300)], E);
        l.by_expiry(&mut ids);
        assert_eq!(ids, vec![5, 9, 1]);
        // Renewed at t0 + 30 with a TTL (as the table now holds) of 400: 430 > 301.
        l.renew(5, 400, t0 + secs(30));
        l.by_expiry(&mut ids);
        assert_eq!(ids, vec![9, 5, 1]);
    }

    #[test]
    fn lease_renew_moves_the_deadline_and_demotion_forgets_it() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        let leases = [(7, 3)];
        l.tick(t0, Some(1), &leases, E);
        assert_eq!(l.renew(7, 3, t0 + secs(2)), Some(3));
        assert_eq!(l.remaining(7, 3, t0 + secs(2)), 3);
        assert!(l.tick(t0 + secs(4), Some(1), &leases, E).is_empty());
        assert_eq!(l.tick(t0 + secs(5), Some(1), &leases, E), vec![7]);
        // Renewing an expired lease does not renew it (its revocation is under way).
        assert_eq!(l.renew(7, 3, t0 + secs(5)), None);
        assert_eq!(l.tick(t0 + secs(5), Some(1), &leases, E), Vec::<i64>::new());
        // Demoted, then promoted again: a fresh deadline with the extension.
        l.tick(t0 + secs(6), None, &leases, E);
        assert!(l.tick(t0 + secs(20), Some(1), &leases, E).is_empty());
        assert_eq!(l.remaining(7, 3, t0 + secs(20)), 4);
        // A lease granted while primary starts at once.
        l.granted(8, 2, t0 + secs(20));
        assert_eq!(l.remaining(8, 2, t0 + secs(21)), 1);
        assert_eq!(
            l.tick(t0 + secs(22), Some(1), &[(7, 3), (8, 2)], E),
            vec![8]
        );
    }

    /// etcd revokes at most `leaseRevokeRate` (1,000) expired leases a second, soonest
    /// expiry first: 1,200 leases expiring together take three ticks, and a lease whose
    /// revocation is pending is not counted against the next tick's limit.
    #[test]
    fn expired_leases_are_revoked_at_most_500_a_tick_soonest_first() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        // IDs descending as deadlines ascend: the order is the deadline's, not the ID's.
        let leases: Vec<(i64, i64)> = (0..1200).map(|i| (5000 - i, 10 + i)).collect();
        assert!(l.tick(t0, Some(1), &leases, E).is_empty());
        let at = t0 + secs(2000);
        let first = l.tick(at, Some(1), &leases, E);
        assert_eq!(first.len(), REVOKE_PER_TICK);
        assert_eq!(first[..3], [5000, 4999, 4998]);
        assert_eq!(*first.last().unwrap(), 5000 - 499);
        let second = l.tick(at + Duration::from_millis(500), Some(1), &leases, E);
        assert_eq!(second.len(), REVOKE_PER_TICK);
        assert_eq!(second[0], 5000 - 500);
        // 200 left; the first tick's revocations are still pending (within REVOKE_RETRY).
        let third = l.tick(at + secs(1), Some(1), &leases, E);
        assert_eq!(
            third,
            ((5000 - 1199)..=(5000 - 1000)).rev().collect::<Vec<i64>>()
        );
        assert!(l
            .tick(at + Duration::from_millis(1500), Some(1), &leases, E)
            .is_empty());
        // Revoked ones leave; the unrevoked first batch is proposed again after the retry.
        let again = l.tick(at + REVOKE_RETRY, Some(1), &leases, E);
        assert_eq!(again, first);
    }

    /// etcd's `Promote` with 1,000 leases or more spreads their deadlines so that a pile of
    /// them falls due at 750 a second; fewer leases keep TTL + extension exactly.
    #[test]
    fn a_promotion_spreads_piled_up_deadlines_at_750_a_second() {
        let t0 = Instant::now();
        let few: Vec<(i64, i64)> = (0..999).map(|i| (i, 10)).collect();
        let mut l = Lessor::new();
        l.tick(t0, Some(1), &few, E);
        assert!(few
            .iter()
            .all(|&(id, _)| l.deadlines[&id] == t0 + secs(10) + E));
        // 2,000 leases: 1,500 of TTL 10 (one pile) and 500 of TTL 30 (another, 20 s later).
        let many: Vec<(i64, i64)> = (0..2000)
            .map(|i| (i, if i < 1500 { 10 } else { 30 }))
            .collect();
        let mut l = Lessor::new();
        l.tick(t0, Some(1), &many, E);
        let mut ds: Vec<Instant> = l.deadlines.values().copied().collect();
        ds.sort();
        for &(id, ttl) in &many {
            assert!(
                l.deadlines[&id] >= t0 + secs(ttl) + E,
                "lease {id} moved earlier"
            );
        }
        for (i, d) in ds.iter().enumerate() {
            let within = ds[i..].iter().take_while(|e| **e < *d + secs(1)).count();
            assert!(within <= 750, "{within} deadlines in the second from #{i}");
        }
        // The first 750 of the pile keep theirs; the last of it moves 2 s (1,500 / 750).
        assert_eq!(ds[749], t0 + secs(10) + E);
        assert!(ds[750] > t0 + secs(10) + E);
        assert_eq!(ds[1499], t0 + secs(12) + E);
        // The TTL-30 pile is a window of its own, under the limit: untouched.
        assert_eq!(ds[1500], t0 + secs(30) + E);
        assert_eq!(ds[1999], t0 + secs(30) + E);
        // Not at a tick that is no promotion.
        let before = l.deadlines.clone();
        l.tick(t0 + secs(1), Some(1), &many, E);
        assert_eq!(l.deadlines, before);
    }

    #[test]
    fn lease_deadlines_start_afresh_in_a_new_term() {
        let t0 = Instant::now();
        let mut l = Lessor::new();
        let leases = [(1, 10)];
        l.tick(t0, Some(1), &leases, E);
        assert_eq!(l.remaining(1, 10, t0), 11);
        // Leader again in term 3 (another leader may have renewed it in term 2).
        assert!(l.tick(t0 + secs(10), Some(3), &leases, E).is_empty());
        assert!(l.is_primary_in(3) && !l.is_primary_in(1));
        assert_eq!(l.remaining(1, 10, t0 + secs(10)), 11);
        assert!(l.tick(t0 + secs(20), Some(3), &leases, E).is_empty());
        assert_eq!(l.tick(t0 + secs(21), Some(3), &leases, E), vec![1]);
    }
}
