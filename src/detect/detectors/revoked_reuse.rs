//! `revoked_reuse` (DESIGN §6): a token rejected as revoked or expired, used again and
//! again — an old key still deployed after a rotation, or a stolen one being replayed.
//!
//! One or two such rejections are normal (a client whose access token expired refreshes;
//! a rotated key is tried once more by a straggler), so it takes `min_uses` in the window.
//! The tokens here may never have been accepted (the engine's per-token state only holds
//! accepted tokens), so the detector keeps its own capped map.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::token_spray_kit::{before, ms};
use super::{Common, Detector};
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::window::Window;
use crate::detect::{Finding, Findings, Obs, Severity};
use crate::event::{EventTime, Outcome, Reason, TokenId};

/// Buckets per window.
const BUCKETS: usize = 10;
/// Client addresses remembered per token for evidence.
const IPS: usize = 5;

/// `[detectors.revoked_reuse]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Revoked/expired rejections of one token in the window to fire (default 5). Panther's
    /// Auth0 rule fires on any refresh-token reuse, but there a reuse is itself proof of
    /// theft; an API key or access token is legitimately retried once or twice after it
    /// expires or is rotated, while five in ten minutes is a client (or thief) that keeps
    /// using it.
    pub min_uses: u64,
    /// Sliding window (default 600 s).
    pub window_secs: u64,
    /// No second record for the same token within this (default 3600 s, Panther's 60 m
    /// dedupe).
    pub cooldown_secs: u64,
    /// Tokens tracked at most (default 50 000); the least recently seen are evicted.
    pub max_tokens: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            min_uses: 5,
            window_secs: 600,
            cooldown_secs: 3600,
            max_tokens: 50_000,
        }
    }
}

impl Common for Settings {
    fn enabled(&self) -> bool {
        self.enabled
    }
}

/// One revoked or expired token's recent uses.
#[derive(Debug, Clone, Default)]
struct TokenUses {
    uses: Window<BUCKETS>,
    revoked: u32,
    expired: u32,
    ips: [Option<IpAddr>; IPS],
    first: EventTime,
    last: EventTime,
    quiet_until: EventTime,
}

impl Aged for TokenUses {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

impl TokenUses {
    fn note_ip(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if self.ips.contains(&Some(ip)) {
            return;
        }
        if let Some(slot) = self.ips.iter_mut().find(|s| s.is_none()) {
            *slot = Some(ip);
        }
    }
}

/// The detector.
pub struct RevokedReuse {
    settings: Settings,
    tokens: BoundedMap<TokenId, TokenUses>,
}

impl RevokedReuse {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        RevokedReuse {
            settings: settings.clone(),
            tokens: BoundedMap::new(settings.max_tokens),
        }
    }

    fn finding(&self, tok: &TokenId, st: &TokenUses, n: u64, obs: &Obs<'_>) -> Finding {
        let mut ips: Vec<IpAddr> = st.ips.iter().flatten().copied().collect();
        ips.sort();
        let evidence = json!({
            "uses": n,
            "threshold": self.settings.min_uses,
            "window_secs": self.settings.window_secs,
            "revoked": st.revoked,
            "expired": st.expired,
            "ips": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "first": st.first.to_string(),
            "last": st.last.to_string(),
        });
        Finding::about_token(
            "revoked_reuse",
            Severity::Medium,
            tok.clone(),
            obs,
            evidence,
            self.settings.cooldown_secs,
        )
    }
}

impl Detector for RevokedReuse {
    fn name(&self) -> &'static str {
        "revoked_reuse"
    }

    fn observe(&mut self, obs: &Obs<'_>, out: &mut Findings) {
        let reason = match obs.ev.outcome {
            Outcome::Rejected(r @ (Reason::Revoked | Reason::Expired)) => r,
            _ => return,
        };
        let Some(tok) = &obs.ev.token else { return };
        let t = obs.ev.time;
        let width = ms(self.settings.window_secs) / BUCKETS as i64;
        let st = self.tokens.entry(tok, || tok.clone(), TokenUses::default);
        if st.uses.sum_at(t, width) == 0 {
            *st = TokenUses {
                first: t,
                quiet_until: st.quiet_until,
                ..TokenUses::default()
            };
        }
        if !st.uses.add(t, width, 1) {
            return;
        }
        st.last = st.last.max(t);
        match reason {
            Reason::Revoked => st.revoked = st.revoked.saturating_add(1),
            _ => st.expired = st.expired.saturating_add(1),
        }
        st.note_ip(obs.ev.ip);
        let n = st.uses.sum_at(t, width);
        if n < self.settings.min_uses || t < st.quiet_until {
            return;
        }
        st.quiet_until = EventTime::from_millis(
            t.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        let st = st.clone();
        out.push(self.finding(tok, &st, n, obs));
    }

    fn tick(&mut self, now: EventTime, _out: &mut Findings) {
        let keep = ms(self.settings.window_secs).max(ms(self.settings.cooldown_secs));
        self.tokens.expire(before(now, keep));
    }

    fn tracked(&self) -> usize {
        self.tokens.len()
    }

    fn evictions(&self) -> u64 {
        self.tokens.evictions()
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_spray_kit::test_util::{ev, obs, take};
    use super::*;

    fn use_(d: &mut RevokedReuse, f: &mut Findings, secs: i64, ip: &str, tok: &str, r: Reason) {
        let e = ev(secs, ip, Some(tok), Outcome::Rejected(r));
        d.observe(&obs(&e, true), f);
        if secs % 10 == 0 {
            d.tick(EventTime::from_secs(secs), f);
        }
    }

    #[test]
    fn fires_on_an_old_key_still_in_use() {
        let mut d = RevokedReuse::new(&Settings::default());
        let mut f = Findings::default();
        let mut got = Vec::new();
        for i in 0..20i64 {
            let ip = format!("192.0.2.{}", 50 + i % 7);
            use_(&mut d, &mut f, i * 28, &ip, "ak_old", Reason::Revoked);
            got.extend(take(&mut f));
        }
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!(
            (g.key.as_str(), g.ts),
            ("ak_old", EventTime::from_secs(4 * 28))
        );
        assert_eq!(g.token.as_ref().map(TokenId::as_str), Some("ak_old"));
        assert_eq!(g.evidence["uses"], 5);
        assert_eq!(
            g.evidence["ips"],
            json!([
                "192.0.2.50",
                "192.0.2.51",
                "192.0.2.52",
                "192.0.2.53",
                "192.0.2.54"
            ])
        );
        assert_eq!(g.cooldown_ms, 3_600_000);
    }

    #[test]
    fn quiet_on_expired_refresh_and_rotation_stragglers() {
        let mut d = RevokedReuse::new(&Settings::default());
        let mut f = Findings::default();
        for day in 0..30i64 {
            // Each morning the access token has expired once, then is refreshed.
            use_(
                &mut d,
                &mut f,
                day * 86_400,
                "10.0.0.1",
                "ak_a",
                Reason::Expired,
            );
            // A rotated key tried again twice, 10-50 minutes apart.
            let tok = format!("ak_rot{day}");
            use_(
                &mut d,
                &mut f,
                day * 86_400 + 5,
                "10.0.0.2",
                &tok,
                Reason::Revoked,
            );
            use_(
                &mut d,
                &mut f,
                day * 86_400 + 1800,
                "10.0.0.2",
                &tok,
                Reason::Revoked,
            );
            // Other rejections of a token are not this detector's.
            for k in 0..10 {
                use_(
                    &mut d,
                    &mut f,
                    day * 86_400 + k,
                    "10.0.0.3",
                    "ak_b",
                    Reason::Invalid,
                );
            }
        }
        assert!(take(&mut f).is_empty());
    }

    #[test]
    fn bounded_under_a_flood_of_tokens() {
        let s = Settings {
            max_tokens: 10_000,
            ..Settings::default()
        };
        let mut d = RevokedReuse::new(&s);
        let mut f = Findings::default();
        for i in 0..1_000_000i64 {
            let tok = format!("r{i}");
            let e = ev(
                i / 1000,
                "10.0.0.1",
                Some(&tok),
                Outcome::Rejected(Reason::Revoked),
            );
            d.observe(&obs(&e, false), &mut f);
        }
        assert!(d.tracked() <= 10_000);
        assert!(d.evictions() >= 990_000);
        assert!(f.is_empty());
    }
}
