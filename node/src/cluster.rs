//! Membership: members, their ids, and the cluster id, computed exactly as etcd does so that a
//! statically bootstrapped detcd cluster has the ids etcd would give it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// A member of the cluster, as the members API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft id.
    pub id: u64,
    /// Name; empty until the member has started and published it.
    pub name: String,
    /// Peer URLs (Raft traffic).
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until the member has started and published them.
    pub client_urls: Vec<String>,
    /// A learner (etcd 3.4's `member add --learner`): Raft replicates to it, but it has no
    /// vote and does not count toward any quorum until promoted. Left out of the encoding
    /// when false, so members written before learners existed read (and write) alike.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_learner: bool,
}

/// The members of a cluster, by id (ordered, so every member iterates them alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Current members.
    pub members: BTreeMap<u64, Member>,
    /// Ids removed from the cluster; they may never rejoin under the same id.
    pub removed: Vec<u64>,
}

/// Why a membership change does not fit the members: etcd's HTTP status and message.
pub type Refusal = (u16, String);

/// How many learners a cluster may have (etcd 3.4's `maxLearners`).
pub const MAX_LEARNERS: usize = 1;

/// etcd's `ErrTooManyLearners`.
pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";

/// etcd's `ErrMemberNotLearner`.
pub const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";

impl Members {
    /// The member owning `peer_url`, if any.
    pub fn by_peer_url(&self, peer_url: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
    }

    /// The member whose peer URLs are exactly `urls`, in any order.
    pub fn by_peer_urls(&self, urls: &[String]) -> Option<&Member> {
        let mut want = urls.to_vec();
        want.sort();
        self.members.values().find(|m| {
            let mut have = m.peer_urls.clone();
            have.sort();
            have == want
        })
    }

    /// No member other than `except` has one of `urls`.
    pub fn check_urls(&self, urls: &[String], except: Option<u64>) -> Result<(), Refusal> {
        let in_use = self
            .members
            .values()
            .any(|m| Some(m.id) != except && m.peer_urls.iter().any(|u| urls.contains(u)));
        if in_use {
            return Err((409, "membership: peerURL exists".into()));
        }
        Ok(())
    }

    /// Whether `id` may be added with `urls` (or, with `update`, change its peer URLs to
    /// `urls`), as etcd's ValidateConfigurationChange decides. Checked when the request
    /// arrives and again when its entry applies (the members may have changed in between).
    pub fn check_add(&self, id: u64, urls: &[String], update: bool) -> Result<(), Refusal> {
        if update {
            if !self.members.contains_key(&id) {
                return Err(self.gone(id));
            }
        } else if self.removed.contains(&id) {
            return Err((410, "membership: ID removed".into()));
        } else if self.members.contains_key(&id) {
            return Err((409, "membership: ID exists".into()));
        }
        self.check_urls(urls, Some(id))
    }

    /// How many members are learners.
    pub fn learners(&self) -> usize {
        self.members.values().filter(|m| m.is_learner).count()
    }

    /// The voting members (learners count toward no quorum: etcd's `VotingMembers`).
    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !m.is_learner)
    }

    /// A learner may be added: fewer than [`MAX_LEARNERS`] are there (etcd's
    /// ValidateConfigurationChange for ConfChangeAddLearnerNode).
    pub fn check_learner_room(&self) -> Result<(), Refusal> {
        if self.learners() >= MAX_LEARNERS {
            return Err((412, TOO_MANY_LEARNERS.into()));
        }
        Ok(())
    }

    /// The member `id` may be promoted: it is a member, and a learner.
    pub fn check_promote(&self, id: u64) -> Result<&Member, Refusal> {
        let m = self.members.get(&id).ok_or_else(|| self.gone(id))?;
        if !m.is_learner {
            return Err((412, NOT_A_LEARNER.into()));
        }
        Ok(m)
    }

    /// The member `id` may be removed: it is one (see [`Members::check_add`]).
    pub fn check_remove(&self, id: u64) -> Result<&Member, Refusal> {
        self.members.get(&id).ok_or_else(|| self.gone(id))
    }

    fn gone(&self, id: u64) -> Refusal {
        if self.removed.contains(&id) {
            (410, format!("Member permanently removed: {id:x}"))
        } else {
            (404, format!("No such member: {id:x}"))
        }
    }
}

/// A URL as Go's `url.URL.String()` prints it for etcd's URLs: `scheme://host:port`, with no
/// trailing slash (the `url` crate adds one for an empty path, which would change the ids).
pub fn url_string(u: &url::Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    let path = u.path();
    if path != "/" {
        s.push_str(path);
    }
    s
}

fn sha1_u64(bytes: &[u8]) -> u64 {
    let h = Sha1::digest(bytes);
    u64::from_be_bytes(h[..8].try_into().expect("sha1 has 20 bytes"))
}

/// etcd's member id: SHA-1 of the sorted peer URLs joined, then the cluster token, and for
/// members added at runtime a time suffix (etcd uses the Unix time; we pass a seeded salt).
pub fn member_id(peer_urls: &[String], token: &str, salt: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    if let Some(s) = salt {
        b.extend_from_slice(s.to_string().as_bytes());
    }
    sha1_u64(&b)
}

/// etcd's cluster id: SHA-1 of the sorted member ids, 8 bytes big-endian each.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    sha1_u64(&b)
}

/// Hex form of an id as etcd prints it (no leading zeros).
pub fn id_hex(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd_for_its_default_single_member() {
        // etcd 3.4 with no flags: member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster", None);
        assert_eq!(id_hex(id), "8e9e05c52164694d");
        assert_eq!(id_hex(cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn url_string_drops_the_trailing_slash() {
        let u = url::Url::parse("http://127.0.0.1:2380").unwrap();
        assert_eq!(url_string(&u), "http://127.0.0.1:2380");
    }

    fn member(id: u64, is_learner: bool) -> Member {
        Member {
            id,
            name: String::new(),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            client_urls: vec![],
            is_learner,
        }
    }

    #[test]
    fn one_learner_at_most_and_only_learners_are_promoted() {
        let mut ms = Members::default();
        ms.members.insert(1, member(1, false));
        assert_eq!(ms.check_learner_room(), Ok(()));
        assert_eq!(ms.check_promote(1).err(), Some((412, NOT_A_LEARNER.into())));
        assert_eq!(ms.check_promote(9).err().map(|r| r.0), Some(404));
        ms.members.insert(2, member(2, true));
        assert_eq!(ms.learners(), 1);
        assert_eq!(
            ms.check_learner_room(),
            Err((412, TOO_MANY_LEARNERS.into()))
        );
        assert_eq!(ms.check_promote(2).map(|m| m.id), Ok(2));
    }

    #[test]
    fn a_voter_encodes_as_before_learners_existed() {
        let json = serde_json::to_string(&member(1, false)).unwrap();
        assert!(!json.contains("is_learner"), "{json}");
        let back: Member = serde_json::from_str(&json).unwrap();
        assert!(!back.is_learner);
        let learner = serde_json::to_string(&member(2, true)).unwrap();
        assert!(serde_json::from_str::<Member>(&learner).unwrap().is_learner);
    }
}
