//! Small parts shared by the per-IP and global detectors (`rejection_ratio`, `brute_force`,
//! `token_spray`, `distributed_spray`, `revoked_reuse`): token hashing, a capped set of
//! token hashes, per-reason counts and "is this a spray attempt". (The known-token outage
//! guard they share lives in [`health`](super::health), one copy in the engine.)

use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use crate::detect::Obs;
use crate::event::{EventTime, Outcome, Reason, TokenId};
use crate::metrics::reason_index;

/// A token as a 64-bit hash: per-IP sets store these, never strings (8 bytes, no allocation).
/// SipHash with fixed keys, so a replay hashes identically (and hashes in a snapshot stay
/// valid across a restart).
pub fn token_hash(t: &TokenId) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    t.as_str().hash(&mut h);
    h.finish()
}

/// True if the event is a guessing attempt: a rejection for an invalid (or unclassified)
/// credential whose token never had an accepted check under any of its identities. A known
/// token that fails is not a guess whatever the log says (an outage, a rotation, a revoked
/// key: `rejection_ratio`'s and `revoked_reuse`'s business); expired and revoked tokens were
/// real once, and a 403 means the token was valid, so neither is a guess either.
pub(crate) fn is_spray_attempt(obs: &Obs<'_>) -> bool {
    match obs.ev.outcome {
        Outcome::Rejected(Reason::Invalid | Reason::Other) => !obs.token_known,
        _ => false,
    }
}

/// Distinct token hashes with the time each was last presented; at most `cap` are kept
/// (the detectors only need exact counts up to their threshold, DETECTORS.md).
///
/// The first hash is stored inline and only a second one allocates: under a spray from
/// random addresses almost every address tries one token, and a heap block per address
/// (allocated on its first attempt, freed when it is evicted) was a third of the per-address
/// work. Serialised as before, one array of `[hash, time]` pairs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<(u64, EventTime)>", into = "Vec<(u64, EventTime)>")]
pub(crate) struct TokenSet {
    /// The first entry (`None` only when the set is empty).
    first: Option<(u64, EventTime)>,
    /// The entries after it, in first-seen order.
    rest: Vec<(u64, EventTime)>,
}

impl From<Vec<(u64, EventTime)>> for TokenSet {
    fn from(mut v: Vec<(u64, EventTime)>) -> Self {
        if v.is_empty() {
            return TokenSet::default();
        }
        let first = v.remove(0);
        TokenSet {
            first: Some(first),
            rest: v,
        }
    }
}

impl From<TokenSet> for Vec<(u64, EventTime)> {
    fn from(s: TokenSet) -> Self {
        s.iter().copied().collect()
    }
}

impl TokenSet {
    /// Entries in first-seen order.
    fn iter(&self) -> impl Iterator<Item = &(u64, EventTime)> + '_ {
        self.first.iter().chain(self.rest.iter())
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Records `h` at `t`; returns true if it was new. Entries older than `since` make room
    /// first; when still full the new hash is not stored (the count saturates at `cap`).
    pub(crate) fn add(&mut self, h: u64, t: EventTime, since: EventTime, cap: usize) -> bool {
        let found = self
            .first
            .iter_mut()
            .chain(self.rest.iter_mut())
            .find(|e| e.0 == h);
        if let Some(e) = found {
            e.1 = e.1.max(t);
            return false;
        }
        if self.len() >= cap {
            self.forget_before(since);
        }
        if self.len() >= cap {
            return false;
        }
        if self.first.is_none() {
            self.first = Some((h, t));
        } else {
            self.rest.push((h, t));
        }
        true
    }

    /// Drops entries last presented before `since`.
    pub(crate) fn forget_before(&mut self, since: EventTime) {
        self.rest.retain(|e| e.1 >= since);
        if self.first.is_some_and(|e| e.1 < since) {
            self.first = (!self.rest.is_empty()).then(|| self.rest.remove(0));
        }
    }

    /// Distinct hashes presented at or after `since`.
    pub(crate) fn count_since(&self, since: EventTime) -> usize {
        self.iter().filter(|e| e.1 >= since).count()
    }

    /// The hashes presented at or after `since`, in first-seen order.
    pub(crate) fn hashes_since(&self, since: EventTime) -> impl Iterator<Item = u64> + '_ {
        self.iter().filter(move |e| e.1 >= since).map(|e| e.0)
    }
}

/// Rejections by reason (indexed like [`Reason::ALL`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReasonCounts([u32; 5]);

impl ReasonCounts {
    /// Counts one rejection.
    pub(crate) fn add(&mut self, r: Reason, n: u32) {
        if let Some(c) = self.0.get_mut(reason_index(r)) {
            *c = c.saturating_add(n);
        }
    }

    /// The count for `r`.
    pub(crate) fn get(&self, r: Reason) -> u32 {
        self.0.get(reason_index(r)).copied().unwrap_or(0)
    }

    /// Non-zero reasons, most frequent first (ties by label), as `{"reason": n, ...}` pairs
    /// in a JSON array so the order survives.
    pub(crate) fn top(&self, n: usize) -> Value {
        let mut v: Vec<(Reason, u32)> = Reason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, c)| *c > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
        v.into_iter()
            .take(n)
            .map(|(r, c)| json!({"reason": r.as_str(), "count": c}))
            .collect()
    }
}

/// Seconds to milliseconds, saturating (the one helper lives beside `Finding`).
pub(crate) use crate::detect::record::secs_to_ms as ms;

/// `t - d`, saturating.
pub(crate) fn before(t: EventTime, d_ms: i64) -> EventTime {
    EventTime::from_millis(t.as_millis().saturating_sub(d_ms))
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Events and observations for the detectors' unit tests.

    use std::net::IpAddr;

    use crate::detect::detectors::health::Health;
    use crate::detect::{Finding, Findings, Obs};
    use crate::event::{AuthEvent, EventTime, Outcome, TokenId};

    /// An event at `secs` from `ip` with `token`.
    pub(crate) fn ev(secs: i64, ip: &str, token: Option<&str>, outcome: Outcome) -> AuthEvent {
        AuthEvent {
            alias: None,
            time: EventTime::from_secs(secs),
            source: 0,
            token: token.map(TokenId::new),
            ip: ip.parse().ok(),
            user: Some("u".into()),
            outcome,
            status: None,
        }
    }

    /// The observation of `ev` (IP as its own key, no location, no outage).
    pub(crate) fn obs<'a>(ev: &'a AuthEvent, known: bool) -> Obs<'a> {
        Obs {
            ev,
            source: "gw",
            ip_key: ev.ip,
            token_known: known,
            last_accepted: known.then_some(EventTime::from_millis(0)),
            location: None,
            token_hash: None,
            health: &Health::EMPTY,
        }
    }

    /// The observation of `ev` as the engine makes it: counted in `health` first, which it
    /// then carries (for the detectors that stand down during an outage).
    pub(crate) fn counted<'a>(health: &'a mut Health, ev: &'a AuthEvent, known: bool) -> Obs<'a> {
        health.observe(ev, known);
        Obs {
            health: &*health,
            ..obs(ev, known)
        }
    }

    /// A pseudo-random IPv4 address for flood tests.
    pub(crate) fn rand_ip(i: u64) -> IpAddr {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        IpAddr::V4(std::net::Ipv4Addr::from(x as u32))
    }

    /// Everything found so far.
    pub(crate) fn take(f: &mut Findings) -> Vec<Finding> {
        f.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_set_counts_exactly_up_to_cap_and_slides() {
        let mut s = TokenSet::default();
        let t = EventTime::from_secs;
        assert!(s.add(1, t(0), t(0), 3));
        assert!(!s.add(1, t(5), t(0), 3));
        assert!(s.add(2, t(10), t(0), 3));
        assert!(s.add(3, t(20), t(0), 3));
        assert!(!s.add(4, t(30), t(0), 3), "full: saturates");
        assert_eq!(s.count_since(t(0)), 3);
        // Token 1 (last at 5 s) slides out of a window starting at 6 s and makes room.
        assert!(s.add(4, t(40), t(6), 3));
        assert_eq!(s.hashes_since(t(6)).collect::<Vec<_>>(), vec![2, 3, 4]);
        // The inline first entry gives way in order, and the JSON form is the pair array.
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(json, "[[2,10000],[3,20000],[4,40000]]");
        let back: TokenSet = serde_json::from_str(&json).expect("back");
        assert_eq!(back.hashes_since(t(0)).collect::<Vec<_>>(), vec![2, 3, 4]);
        s.forget_before(t(50));
        assert_eq!((s.len(), s.count_since(t(0))), (0, 0));
        assert!(s.add(9, t(60), t(50), 3));
        assert_eq!(s.hashes_since(t(0)).collect::<Vec<_>>(), vec![9]);
        assert_eq!(
            token_hash(&TokenId::new("a")),
            token_hash(&TokenId::new("a"))
        );
    }

    #[test]
    fn reasons_sorted_by_count_then_name() {
        let mut r = ReasonCounts::default();
        r.add(Reason::Revoked, 2);
        r.add(Reason::Expired, 2);
        r.add(Reason::Invalid, 5);
        assert_eq!(
            r.top(2),
            json!([{"reason":"invalid","count":5},{"reason":"expired","count":2}])
        );
    }
}
