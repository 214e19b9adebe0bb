//! Known tokens across partitions: brute_force and token_spray ignore tokens that were
//! accepted before ("known"), but an `auth.by_ip` partition sees a token accepted only
//! from its own addresses. So the token stage, which sees every use of a token, announces
//! each token's first accepted check on `topics.known_tokens` (compacted; key = the token
//! id or `fp:` fingerprint the edges publish — never a secret —, value = the time), and
//! every IP stage reads that topic from its start into a bounded map.
//!
//! Before a partition's engine sees a *rejected* check of a token the feed knows as
//! accepted earlier (in event time), the stage hands it one accepted check of that token
//! (no address, same time), so the engine knows it from then on — as one process would.
//! Only the first per token and partition: past that the engine remembers it (and a
//! restored snapshot does too). That check also counts once in the detectors' outage
//! guard (known tokens failing), a one-check difference from one process.
//!
//! The feed is as current as the token stage: an acceptance reaches the IP stages about
//! `reorder_ms` plus a producer round trip after it reached the token stage. A rejection
//! that follows the acceptance closer than that (or an IP stage catching up a backlog
//! ahead of the token stage) still finds the token unknown, as before the feed.

use std::collections::HashSet;

use super::HashMap;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::{Engine, EngineSettings};
use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
use crate::metrics::RecordCounters;
use crate::pipeline::EventSink;

/// Tokens one token stage remembers having announced; past it the set starts afresh (the
/// compacted topic absorbs the repeats).
const ANNOUNCED_CAP: usize = 1 << 20;
/// A token announced again after this much event time (so a token in use is not the
/// first the IP stages' bounded map forgets).
const REFRESH_MS: i64 = 24 * 3600 * 1000;
/// Tokens one partition remembers having been taught; past it the set starts afresh.
const TAUGHT_CAP: usize = 1 << 16;
/// Feed records read per turn of the IP stage's loop at most (a backlog at start is read
/// over several turns, between the stage's own records).
const READ_PER_TURN: usize = 4096;
/// How often a feed that could not be opened (topic missing, broker down) is tried again.
const RETRY: Duration = Duration::from_secs(30);
/// Broker round trip for the topic's partitions.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// A 64-bit hash of a token for the bounded "already sent / taught" sets.
fn hash(t: &TokenId) -> u64 {
    use std::hash::BuildHasher;
    // Fixed seeds: the sets live in one process, but a fixed hash keeps runs repeatable.
    foldhash::fast::FixedState::with_seed(0x746f_6b65_6e77).hash_one(t.as_str())
}

/// The token stage's side: announces first acceptances.
pub(super) struct Announcer {
    producer: ThreadedProducer<FeedCtx>,
    topic: String,
    /// Token hash → event time (ms) it was last announced.
    sent: HashMap<u64, i64>,
}

impl Announcer {
    /// A producer of `topics.known_tokens`.
    pub(super) fn new(cfg: &Config) -> Result<Announcer, KafkaError> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("linger.ms", "5");
        crate::scale::base_client(&mut c, &cfg.kafka);
        Ok(Announcer {
            producer: c.create_with_context(FeedCtx::default())?,
            topic: cfg.kafka.topics.known_tokens.clone(),
            sent: HashMap::default(),
        })
    }

    /// Looks at an event the token stage hands its engine: a token's first accepted check
    /// (as far as this stage remembers) is announced.
    pub(super) fn event(&mut self, ev: &AuthEvent) {
        let (Outcome::Accepted, Some(t)) = (ev.outcome, &ev.token) else {
            return;
        };
        if self.sent.len() >= ANNOUNCED_CAP {
            self.sent.clear();
        }
        let now = ev.time.as_millis();
        let last = self.sent.entry(hash(t)).or_insert(i64::MIN);
        if now.saturating_sub(*last) < REFRESH_MS {
            return;
        }
        *last = now;
        let at = now.to_be_bytes();
        let rec = BaseRecord::to(&self.topic).key(t.as_str()).payload(&at);
        // A full queue loses the announcement, never blocks detection: the token stays
        // unknown to other partitions until its next acceptance after a restart.
        if let Err((e, _)) = self.producer.send(rec) {
            tracing::debug!(%e, "worker: a known-token announcement was not queued");
        }
    }
}

/// When the feed says a token was accepted: first and last (announcements repeat).
#[derive(Debug, Clone, Copy)]
struct AcceptedAt {
    first: EventTime,
    last: EventTime,
}

impl Aged for AcceptedAt {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// The IP stage's side: the tokens accepted anywhere.
pub(super) struct KnownFeed {
    topic: String,
    client: crate::config::KafkaConfig,
    reader: Option<BaseConsumer<FeedCtx>>,
    known: BoundedMap<TokenId, AcceptedAt>,
    counters: RecordCounters,
    last_try: Option<std::time::Instant>,
}

impl KnownFeed {
    /// Reads `topics.known_tokens` from its start (opened at the first [`read`]); holds
    /// as many tokens as an engine would.
    ///
    /// [`read`]: KnownFeed::read
    pub(super) fn new(cfg: &Config, counters: RecordCounters) -> KnownFeed {
        let cap = EngineSettings::from_config(&cfg.detectors, cfg.geo.ipv6_prefix).max_tokens;
        KnownFeed {
            topic: cfg.kafka.topics.known_tokens.clone(),
            client: cfg.kafka.clone(),
            reader: None,
            known: BoundedMap::new(cap),
            counters,
            last_try: None,
        }
    }

    fn open(&self) -> Result<BaseConsumer<FeedCtx>, String> {
        let mut c = rdkafka::ClientConfig::new();
        // librdkafka assigns only with a group id; this one never joins nor commits.
        c.set("group.id", self.client.group_id("known-reader"))
            .set("enable.auto.commit", "false");
        crate::scale::base_client(&mut c, &self.client);
        let reader: BaseConsumer<FeedCtx> = c
            .create_with_context(FeedCtx::default())
            .map_err(|e| e.to_string())?;
        let md = reader
            .fetch_metadata(Some(&self.topic), BROKER_WAIT)
            .map_err(|e| e.to_string())?;
        let count = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(format!("topic {} not found", self.topic));
        }
        let mut tpl = TopicPartitionList::new();
        for n in (0..count).filter_map(|n| i32::try_from(n).ok()) {
            tpl.add_partition_offset(&self.topic, n, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        reader.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(reader)
    }

    /// Takes what the feed has (without waiting).
    pub(super) fn read(&mut self) {
        if self.reader.is_none() {
            if self.last_try.is_some_and(|t| t.elapsed() < RETRY) {
                return;
            }
            self.last_try = Some(std::time::Instant::now());
            match self.open() {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    tracing::warn!("worker: known tokens feed not read yet ({e}); tokens accepted through other partitions look unknown to brute_force and token_spray");
                    return;
                }
            }
        }
        let Some(reader) = &self.reader else { return };
        for _ in 0..READ_PER_TURN {
            let Some(Ok(m)) = reader.poll(Duration::ZERO) else {
                return;
            };
            let at = m
                .payload()
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
                .map(i64::from_be_bytes);
            let (Some(key), Some(at)) = (m.key().and_then(|k| std::str::from_utf8(k).ok()), at)
            else {
                self.counters.undecodable.inc();
                continue;
            };
            let (t, id) = (EventTime::from_millis(at), TokenId::new(key));
            match self.known.get_mut(&id) {
                Some(e) => {
                    e.first = e.first.min(t);
                    e.last = e.last.max(t);
                    self.counters.duplicate.inc();
                }
                None => {
                    self.known.insert(id, AcceptedAt { first: t, last: t });
                    self.counters.applied.inc();
                }
            }
        }
    }

    /// True when the feed knows `t` as accepted before `time`.
    fn accepted_before(&self, t: &TokenId, time: EventTime) -> bool {
        self.known.get(t).is_some_and(|a| a.first < time)
    }
}

/// What the known-tokens feed does in a stage.
pub(super) enum Feed {
    /// The token stage announces.
    Announce(Announcer),
    /// The IP stage follows.
    Follow(Box<KnownFeed>),
    /// The global stage knows every token already.
    Off,
}

impl Feed {
    /// The feed's part in `stage` (announcing needs a producer: without one, nothing is
    /// announced and the stage runs on).
    pub(super) fn for_stage(
        stage: super::Stage,
        cfg: &Config,
        km: &crate::metrics::KafkaMetrics,
    ) -> Feed {
        match stage {
            super::Stage::Token => match Announcer::new(cfg) {
                Ok(a) => Feed::Announce(a),
                Err(e) => {
                    tracing::error!(%e, "worker: no known-tokens producer; tokens accepted through one auth.by_ip partition look unknown in the others");
                    Feed::Off
                }
            },
            super::Stage::Ip => Feed::Follow(Box::new(KnownFeed::new(cfg, km.records(FEED_LABEL)))),
            super::Stage::Global => Feed::Off,
        }
    }

    /// Once per turn of the stage's loop: takes what the feed has.
    pub(super) fn turn(&mut self) {
        if let Feed::Follow(f) = self {
            f.read();
        }
    }

    /// Before `engine` sees `ev` (in release order).
    pub(super) fn before(&mut self, ev: &AuthEvent, taught: &mut Taught, engine: &mut Engine) {
        match self {
            Feed::Announce(a) => a.event(ev),
            Feed::Follow(f) => taught.before(ev, f, engine),
            Feed::Off => {}
        }
    }
}

/// The `topic` label of the feed's records (`tokenwatch_kafka_records_total`).
pub const FEED_LABEL: &str = "known_tokens";

/// What one partition was taught already.
#[derive(Debug, Default)]
pub(super) struct Taught(HashSet<u64, foldhash::fast::RandomState>);

impl Taught {
    /// Before `engine` sees `ev`: if it is a rejected check of a token the feed knows as
    /// accepted earlier and this partition was not taught it yet, one accepted check of it
    /// (no address, the same time) goes first.
    pub(super) fn before(&mut self, ev: &AuthEvent, feed: &KnownFeed, engine: &mut Engine) {
        let (Outcome::Rejected(_), Some(t)) = (ev.outcome, &ev.token) else {
            return;
        };
        if !feed.accepted_before(t, ev.time) {
            return;
        }
        if self.0.len() >= TAUGHT_CAP {
            self.0.clear();
        }
        if !self.0.insert(hash(t)) {
            return;
        }
        engine.event(AuthEvent {
            alias: None,
            time: ev.time,
            source: ev.source,
            token: Some(t.clone()),
            ip: None,
            user: None,
            outcome: Outcome::Accepted,
            status: None,
        });
    }
}

/// Logs failed announcements (once in a while: a missing topic fails every one).
#[derive(Default)]
struct FeedCtx {
    failed: std::sync::atomic::AtomicU64,
}

impl ClientContext for FeedCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        crate::scale::librdkafka_log(level, fac, msg);
    }
}

impl ProducerContext for FeedCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            let n = self
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(%e, failed = n + 1, "worker: known-token announcements not delivered (is topics.known_tokens created?)");
            }
        }
    }
}

impl ConsumerContext for FeedCtx {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::VecSink;
    use crate::event::Reason;
    use crate::metrics::{KafkaMetrics, Metrics};
    use crate::scale::worker::Stage;

    fn check(secs: i64, ip: &str, outcome: Outcome) -> AuthEvent {
        AuthEvent {
            alias: None,
            time: EventTime::from_secs(1_772_409_600 + secs),
            source: 0,
            token: Some(TokenId::new("tok_roam")),
            ip: ip.parse().ok(),
            user: None,
            outcome,
            status: None,
        }
    }

    /// brute_force records of an IP-stage engine fed 40 refused checks of `tok_roam` from
    /// one address, the feed knowing it as accepted at second 0 when `taught`.
    fn brute_force_records(teach: bool) -> usize {
        let m = Metrics::new();
        let cfg = Stage::Ip.config(&Config::default());
        let sink = VecSink::default();
        let mut engine = Engine::for_config(&cfg, &m).with_sink(Box::new(sink.clone()));
        let km = KafkaMetrics::register(&m).unwrap();
        let mut feed = KnownFeed::new(&cfg, km.records(FEED_LABEL));
        if teach {
            let at = check(0, "10.9.0.1", Outcome::Accepted).time;
            let first = AcceptedAt {
                first: at,
                last: at,
            };
            feed.known.insert(TokenId::new("tok_roam"), first);
        }
        let mut taught = Taught::default();
        for s in 0..40 {
            let ev = check(100 + s, "192.0.2.99", Outcome::Rejected(Reason::Forbidden));
            taught.before(&ev, &feed, &mut engine);
            engine.event(ev);
        }
        engine.flush();
        sink.records()
            .iter()
            .filter(|d| d.detector == "brute_force")
            .count()
    }

    #[test]
    fn a_token_the_feed_knows_as_accepted_is_known_to_a_partition_that_never_saw_it() {
        // Unknown here: 40 refusals from one address are a brute force.
        assert_eq!(brute_force_records(false), 1);
        // Accepted elsewhere first: a valid token refused, as one process judges it.
        assert_eq!(brute_force_records(true), 0);
    }

    #[test]
    fn only_the_first_refusal_after_the_acceptance_teaches_and_only_once() {
        let m = Metrics::new();
        let cfg = Stage::Ip.config(&Config::default());
        let km = KafkaMetrics::register(&m).unwrap();
        let mut feed = KnownFeed::new(&cfg, km.records(FEED_LABEL));
        let at = check(50, "10.9.0.1", Outcome::Accepted).time;
        feed.known.insert(
            TokenId::new("tok_roam"),
            AcceptedAt {
                first: at,
                last: at,
            },
        );
        let mut taught = Taught::default();
        let mut engine = Engine::for_config(&cfg, &m);
        let refused = |s| check(s, "192.0.2.99", Outcome::Rejected(Reason::Invalid));
        // Before the acceptance (event time): not known yet.
        taught.before(&refused(10), &feed, &mut engine);
        assert!(taught.0.is_empty());
        taught.before(&refused(60), &feed, &mut engine);
        taught.before(&refused(61), &feed, &mut engine);
        assert_eq!(taught.0.len(), 1);
        assert_eq!(engine.tracked_tokens(), 1);
    }
}
