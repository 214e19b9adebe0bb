//! Small parts shared by the per-IP and global detectors (`rejection_ratio`, `brute_force`,
//! `token_spray`, `distributed_spray`, `revoked_reuse`): token hashing, a capped set of
//! token hashes, per-reason counts and "is this a spray attempt".

use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use crate::detect::window::Window;
use crate::detect::Obs;
use crate::event::{EventTime, Outcome, Reason, TokenId};
use crate::metrics::reason_index;

/// A token as a 64-bit hash: per-IP sets store these, never strings (8 bytes, no allocation).
/// SipHash with fixed keys, so a replay hashes identically.
pub(crate) fn token_hash(t: &TokenId) -> u64 {
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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct TokenSet {
    items: Vec<(u64, EventTime)>,
}

impl TokenSet {
    /// Records `h` at `t`; returns true if it was new. Entries older than `since` make room
    /// first; when still full the new hash is not stored (the count saturates at `cap`).
    pub(crate) fn add(&mut self, h: u64, t: EventTime, since: EventTime, cap: usize) -> bool {
        if let Some(e) = self.items.iter_mut().find(|e| e.0 == h) {
            e.1 = e.1.max(t);
            return false;
        }
        if self.items.len() >= cap {
            self.forget_before(since);
        }
        if self.items.len() >= cap {
            return false;
        }
        self.items.push((h, t));
        true
    }

    /// Drops entries last presented before `since`.
    pub(crate) fn forget_before(&mut self, since: EventTime) {
        self.items.retain(|e| e.1 >= since);
    }

    /// Distinct hashes presented at or after `since`.
    pub(crate) fn count_since(&self, since: EventTime) -> usize {
        self.items.iter().filter(|e| e.1 >= since).count()
    }

    /// The hashes presented at or after `since`, in first-seen order.
    pub(crate) fn hashes_since(&self, since: EventTime) -> impl Iterator<Item = u64> + '_ {
        self.items.iter().filter(move |e| e.1 >= since).map(|e| e.0)
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

/// Known tokens' checks and rejections over the last few minutes. When most checks of
/// tokens that worked before now fail, the auth backend is down or rotating keys: never-seen
/// and invalid tokens then say nothing about guessing, so the spray detectors stand down
/// (`rejection_ratio` reports the outage). `N` buckets of `WIDTH_MS` each.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct KnownTokenHealth<const N: usize, const WIDTH_MS: i64> {
    checked: Window<N>,
    rejected: Window<N>,
}

/// The outage guard: 5 minutes in 30 s buckets.
pub(crate) type OutageGuard = KnownTokenHealth<10, 30_000>;

/// Its quick twin: the last minute in 10 s buckets, so an outage is recognised within a
/// minute of its start (the 5-minute guard still counts the good minutes before it), for
/// detectors that would otherwise fire inside that minute.
pub(crate) type QuickOutageGuard = KnownTokenHealth<6, 10_000>;

/// Known-token checks in the window before a guard can trip.
const GUARD_MIN_CHECKS: u64 = 20;

impl<const N: usize, const WIDTH_MS: i64> KnownTokenHealth<N, WIDTH_MS> {
    /// Counts a check of a known token.
    pub(crate) fn observe(&mut self, obs: &Obs<'_>) {
        if !obs.token_known {
            return;
        }
        self.checked.add(obs.ev.time, WIDTH_MS, 1);
        if obs.ev.outcome.is_rejected() {
            self.rejected.add(obs.ev.time, WIDTH_MS, 1);
        }
    }

    /// True if more than half of at least 20 known-token checks in the window failed.
    pub(crate) fn outage(&self, now: EventTime) -> bool {
        let c = self.checked.sum_at(now, WIDTH_MS);
        c >= GUARD_MIN_CHECKS && self.rejected.sum_at(now, WIDTH_MS) * 2 > c
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

    /// The observation of `ev` (IP as its own key, no location).
    pub(crate) fn obs<'a>(ev: &'a AuthEvent, known: bool) -> Obs<'a> {
        Obs {
            ev,
            source: "gw",
            ip_key: ev.ip,
            token_known: known,
            last_accepted: known.then_some(EventTime::from_millis(0)),
            location: None,
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
