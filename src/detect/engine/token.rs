//! The token stage: the per-token state map, the token detectors and GeoIP. It sees every
//! event first, drops late ones, and tells the rest stage what it knows of the event's token.

use std::net::IpAddr;
use std::sync::Arc;

use super::{group_ip, on_tick_grid, EngineSettings, TokenDetectors, TokenState, TOKEN_IDLE_MS};
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::detectors::health::Health;
use crate::detect::{Findings, Obs};
use crate::enrich::geo::{GeoLookup, Location};
use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
use crate::metrics::Metrics;

/// What the token stage knows of an event, handed on to the rest stage with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenFacts {
    /// The client address grouped for counting.
    pub ip_key: Option<IpAddr>,
    /// The token had an accepted check before this event.
    pub token_known: bool,
    /// When the token was last accepted before this event.
    pub last_accepted: Option<EventTime>,
}

/// A cached GeoIP answer (including "not located").
#[derive(Debug, Clone)]
struct GeoEntry {
    loc: Option<Location>,
    used: EventTime,
}

impl Aged for GeoEntry {
    fn last_seen(&self) -> EventTime {
        self.used
    }
}

/// See the module docs.
pub(crate) struct TokenStage {
    settings: EngineSettings,
    sources: Arc<[String]>,
    pub(super) tokens: BoundedMap<TokenId, TokenState>,
    pub(super) detectors: TokenDetectors,
    pub(super) geo: Option<Arc<dyn GeoLookup>>,
    geo_cache: BoundedMap<IpAddr, GeoEntry>,
    pub(super) metrics: Option<Metrics>,
    watermark: EventTime,
    last_tick: EventTime,
    published_evictions: u64,
    pub(super) late: u64,
}

impl TokenStage {
    pub(super) fn new(
        settings: EngineSettings,
        sources: Arc<[String]>,
        detectors: TokenDetectors,
    ) -> TokenStage {
        TokenStage {
            tokens: BoundedMap::new(settings.max_tokens),
            settings,
            sources,
            detectors,
            geo: None,
            geo_cache: BoundedMap::new(65_536),
            metrics: None,
            watermark: EventTime::from_millis(i64::MIN),
            last_tick: EventTime::from_millis(i64::MIN),
            published_evictions: 0,
            late: 0,
        }
    }

    /// Restored state starts from the snapshot's watermark, as the rest stage does.
    pub(super) fn resume_at(&mut self, watermark: EventTime) {
        self.watermark = watermark;
        self.last_tick = watermark;
    }

    /// Observes `ev` with the token detectors (their findings go to `out`); `None` when the
    /// event is too late to be used (counted; neither stage sees it).
    pub(crate) fn observe(&mut self, ev: &AuthEvent, out: &mut Findings) -> Option<TokenFacts> {
        let floor = self
            .watermark
            .as_millis()
            .saturating_sub(self.settings.reorder_tolerance_ms);
        if ev.time.as_millis() < floor {
            self.late += 1;
            if let Some(m) = &self.metrics {
                m.late_events.inc();
            }
            return None;
        }
        if ev.time > self.watermark {
            self.watermark = ev.time;
        }
        if let Some(hour_crossed) = on_tick_grid(self.watermark, &mut self.last_tick) {
            if let Some(idle) = hour_crossed {
                // Idle expiry walks every token: once per event-time hour is plenty for a
                // 35-day limit, on the hour so a restored engine expires what an
                // uninterrupted one did.
                self.tokens
                    .expire(EventTime::from_millis(idle.saturating_sub(TOKEN_IDLE_MS)));
            }
            self.publish_gauges();
        }
        let ip_key = ev.ip.map(|ip| group_ip(ip, self.settings.ipv6_prefix));
        let at = ev.token.as_ref().and_then(|t| self.tokens.index_of(t));
        let facts = TokenFacts {
            ip_key,
            token_known: at.is_some(),
            last_accepted: at
                .and_then(|i| self.tokens.at(i))
                .map(|st| st.last_accepted),
        };
        let Some(tok) = &ev.token else {
            return Some(facts);
        };
        // A token gets state only once it has been accepted, so random invalid tokens
        // never allocate per-token state (nor a GeoIP lookup).
        if at.is_none() && ev.outcome != Outcome::Accepted {
            return Some(facts);
        }
        let location = self.locate(ev);
        let source = self
            .sources
            .get(usize::from(ev.source))
            .map_or("", String::as_str);
        let obs = Obs {
            ev,
            source,
            ip_key,
            token_known: facts.token_known,
            last_accepted: facts.last_accepted,
            location: location.as_ref(),
            // The per-IP detectors' inputs; token detectors read neither.
            token_hash: None,
            health: &Health::EMPTY,
        };
        let t = ev.time;
        let st = if let Some(i) = at {
            self.tokens.at_mut(i)
        } else {
            Some(self.tokens.entry(
                tok,
                || tok.clone(),
                || TokenState {
                    last_seen: t,
                    last_accepted: t,
                    ..TokenState::default()
                },
            ))
        };
        let Some(st) = st else {
            return Some(facts);
        };
        if t > st.last_seen {
            st.last_seen = t;
        }
        if ev.outcome == Outcome::Accepted && t > st.last_accepted {
            st.last_accepted = t;
        }
        self.detectors.observe(st, &obs, out);
        Some(facts)
    }

    fn locate(&mut self, ev: &AuthEvent) -> Option<Location> {
        let geo = self.geo.as_ref()?;
        let ip = ev.ip?;
        let used = ev.time;
        let e = self.geo_cache.entry(
            &ip,
            || ip,
            || GeoEntry {
                loc: geo.locate(ip),
                used,
            },
        );
        e.used = used;
        e.loc.clone()
    }

    /// Publishes the token map's size and evictions.
    pub(crate) fn publish_gauges(&mut self) {
        let Some(m) = &self.metrics else { return };
        m.tracked
            .with_label_values(&["token"])
            .set(i64::try_from(self.tokens.len()).unwrap_or(i64::MAX));
        let total = self.tokens.evictions();
        if total > self.published_evictions {
            m.evictions
                .with_label_values(&["token"])
                .inc_by(total - self.published_evictions);
            self.published_evictions = total;
        }
    }
}
