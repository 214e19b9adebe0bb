//! The pipeline driver: batches of lines through parse, enrich and count, then on to the
//! event sink (the detection engine).
//!
//! One `Pipeline` runs on one thread and owns its parsers; counters are kept in plain
//! integers and flushed to Prometheus once per batch.

use crate::durable::StateWriter;
use crate::enrich::{identify_cached, FingerprintCache, Fingerprinter, TokenKind};
use crate::event::{AuthEvent, EventTime, Outcome, SourceIdx};
use crate::metrics::{reason_index, SourceMetrics};
use crate::parse::{Parsed, Parser, Record};
use crate::source::LineBatch;

pub mod parallel;

/// Receives every parsed token check (the detection engine implements this).
pub trait EventSink: Send {
    /// One enriched event, in file order.
    fn event(&mut self, ev: AuthEvent);
    /// A run of events, in file order (a parsed batch of the parallel pipeline).
    fn events(&mut self, evs: Vec<AuthEvent>) {
        for ev in evs {
            self.event(ev);
        }
    }
    /// End of a batch: make outputs visible.
    fn flush(&mut self) {}
    /// Learned state to persist, if the sink has any.
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        None
    }
    /// Streams the same state as [`snapshot`](EventSink::snapshot) into `out` (no copy of it
    /// in memory) and hands the writer back to be committed; `Ok(None)` when the sink has no
    /// state (the writer is dropped, which discards it).
    fn write_snapshot(&mut self, out: StateWriter) -> std::io::Result<Option<StateWriter>> {
        drop(out);
        Ok(None)
    }
    /// Detections emitted so far, by detector (for summaries).
    fn detection_counts(&mut self) -> std::collections::BTreeMap<&'static str, u64> {
        Default::default()
    }
}

/// What replay feeds lines into: a [`Pipeline`] or a [`parallel::ParallelPipeline`].
pub trait Lines {
    /// Complete `\n`-terminated lines of one source, with `times[i]` the fallback event time
    /// of line `i` (see [`Pipeline::process_lines_timed`]).
    fn lines(&mut self, source: SourceIdx, buf: &[u8], times: &[EventTime]);
}

impl Lines for Pipeline {
    fn lines(&mut self, source: SourceIdx, buf: &[u8], times: &[EventTime]) {
        self.process_lines_timed(source, buf, times);
    }
}

/// One configured source's parse stage.
pub struct SourceStage {
    /// The source's name (for reports).
    pub name: String,
    /// Its parser.
    pub parser: Box<dyn Parser>,
    /// How its token values are treated.
    pub token_kind: TokenKind,
    /// Its metric handles.
    pub metrics: SourceMetrics,
}

/// Totals over a pipeline's life (the replay summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Lines read.
    pub lines: u64,
    /// Token checks parsed.
    pub events: u64,
    /// Rejected token checks.
    pub rejected: u64,
    /// Well-formed lines without a token check (and empty lines).
    pub skipped: u64,
    /// Malformed lines.
    pub malformed: u64,
    /// Malformed lines by reason label.
    pub malformed_by: Vec<(&'static str, u64)>,
    /// Skipped lines recognised as not access lines (error logs...), by reason label.
    pub skipped_by: Vec<(&'static str, u64)>,
}

impl Totals {
    /// Adds another pipeline's totals (the workers of a parallel pipeline).
    pub fn add(&mut self, o: &Totals) {
        self.lines += o.lines;
        self.events += o.events;
        self.rejected += o.rejected;
        self.skipped += o.skipped;
        self.malformed += o.malformed;
        for (r, n) in &o.malformed_by {
            bump(&mut self.malformed_by, r, *n);
        }
        for (r, n) in &o.skipped_by {
            bump(&mut self.skipped_by, r, *n);
        }
    }
}

/// Per-batch counts, flushed into Prometheus after the batch.
#[derive(Default)]
struct BatchCounts {
    checks: u64,
    rejected: [u64; 5],
    parsed: u64,
    skipped: u64,
    malformed: u64,
    malformed_by: Vec<(&'static str, u64)>,
    skipped_by: Vec<(&'static str, u64)>,
    max_time: Option<EventTime>,
}

/// Parses, enriches and counts lines; forwards events to the sink.
pub struct Pipeline {
    stages: Vec<SourceStage>,
    fingerprinter: Fingerprinter,
    /// Recent secrets' fingerprints (by keyed hash; bounded).
    fp_cache: FingerprintCache,
    sink: Option<Box<dyn EventSink>>,
    lag: Option<prometheus::Histogram>,
    totals: Totals,
    counts: BatchCounts,
}

impl Pipeline {
    /// A pipeline over `stages` (indexed by `SourceIdx`). Without a sink, tokens are never
    /// even fingerprinted: metrics-only mode does the least work.
    pub fn new(
        stages: Vec<SourceStage>,
        fingerprinter: Fingerprinter,
        sink: Option<Box<dyn EventSink>>,
    ) -> Self {
        Pipeline {
            stages,
            fingerprinter,
            fp_cache: FingerprintCache::default(),
            sink,
            lag: None,
            totals: Totals::default(),
            counts: BatchCounts::default(),
        }
    }

    /// Also records wall-clock minus event time (live mode; meaningless for replay).
    pub fn with_lag_histogram(mut self, h: prometheus::Histogram) -> Self {
        self.lag = Some(h);
        self
    }

    /// Totals so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Processes a batch and then acknowledges it (so its checkpoint may advance).
    pub fn process(&mut self, batch: LineBatch) {
        self.process_lines_timed(batch.source, &batch.buf, &batch.times);
        if let Some(ack) = batch.ack {
            ack.ack();
        }
    }

    /// Processes complete `\n`-terminated lines of one source (a final unterminated line is
    /// processed too) and flushes counters.
    pub fn process_lines(&mut self, source: SourceIdx, buf: &[u8]) {
        self.process_lines_timed(source, buf, &[]);
    }

    /// Like [`process_lines`](Pipeline::process_lines), with `times[i]` the event time of
    /// line `i` when the line has none of its own (lines past the end of `times` have none).
    pub fn process_lines_timed(&mut self, source: SourceIdx, buf: &[u8], times: &[EventTime]) {
        let mut sink = self.sink.take();
        self.parse_to(source, buf, times, sink.as_deref_mut());
        self.sink = sink;
        if let Some(sink) = &mut self.sink {
            sink.flush();
        }
    }

    /// Parses, enriches and counts like [`process_lines_timed`](Self::process_lines_timed),
    /// appending the events to `out` instead of handing them to the sink (a worker of
    /// [`parallel::ParallelPipeline`]).
    pub fn parse_into(
        &mut self,
        source: SourceIdx,
        buf: &[u8],
        times: &[EventTime],
        out: &mut Vec<AuthEvent>,
    ) {
        self.parse_to(source, buf, times, Some(&mut Collect(out)));
    }

    fn parse_to<'s>(
        &mut self,
        source: SourceIdx,
        buf: &[u8],
        times: &[EventTime],
        mut sink: Option<&mut (dyn EventSink + 's)>,
    ) {
        let Some(stage) = self.stages.get_mut(usize::from(source)) else {
            return;
        };
        let mut counts = std::mem::take(&mut self.counts);
        let mut start = 0;
        let mut times = times.iter();
        // One iterator over the batch: its vector search is set up once, not once a line.
        let mut newlines = memchr::memchr_iter(b'\n', buf);
        while start < buf.len() {
            let end = newlines.next().unwrap_or(buf.len());
            let line = &buf[start..end];
            start = end + 1;
            handle_line(
                stage,
                source,
                (line, times.next().copied()),
                (&self.fingerprinter, &mut self.fp_cache),
                sink.as_deref_mut(),
                &mut counts,
            );
        }
        flush(stage, &mut counts, &mut self.totals, self.lag.as_ref());
        self.counts = counts;
    }

    /// The event sink (the detection engine), if any.
    pub fn sink_mut(&mut self) -> Option<&mut (dyn EventSink + 'static)> {
        self.sink.as_deref_mut()
    }
}

fn handle_line<'s>(
    stage: &mut SourceStage,
    source: SourceIdx,
    (line, fallback): (&[u8], Option<EventTime>),
    fp: (&Fingerprinter, &mut FingerprintCache),
    sink: Option<&mut (dyn EventSink + 's)>,
    counts: &mut BatchCounts,
) {
    if line.is_empty() || line == b"\r" {
        counts.skipped += 1;
        return;
    }
    // Without a sink only the counters need the line: the parser may skip building the
    // token, user and address.
    let parsed = match sink {
        Some(_) => stage.parser.parse(line),
        None => stage.parser.parse_counts(line),
    };
    match parsed {
        Ok(Parsed::Event(mut rec)) => {
            rec.time = rec.time.or(fallback);
            counts.parsed += 1;
            counts.checks += 1;
            if let Outcome::Rejected(r) = rec.outcome {
                counts.rejected[reason_index(r)] += 1;
            }
            if let Some(t) = rec.time {
                counts.max_time = counts.max_time.max(Some(t));
            }
            if let Some(sink) = sink {
                sink.event(to_event(rec, source, stage.token_kind, fp));
            }
        }
        Ok(Parsed::Skip) => counts.skipped += 1,
        Ok(Parsed::NotAccess(why)) => {
            counts.skipped += 1;
            bump(&mut counts.skipped_by, why, 1);
        }
        Err(e) => {
            counts.malformed += 1;
            bump(&mut counts.malformed_by, e.reason(), 1);
        }
    }
}

/// An [`EventSink`] that keeps the events in a vector.
struct Collect<'a>(&'a mut Vec<AuthEvent>);

impl EventSink for Collect<'_> {
    fn event(&mut self, ev: AuthEvent) {
        self.0.push(ev);
    }
}

/// Adds `n` to `reason`'s count in a short list of (reason, count).
fn bump(v: &mut Vec<(&'static str, u64)>, reason: &'static str, n: u64) {
    match v.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, c)) => *c += n,
        None => v.push((reason, n)),
    }
}

/// Enriches a borrowed record into an owned event; the raw token is fingerprinted here and
/// dropped with the record.
fn to_event(
    rec: Record<'_>,
    source: SourceIdx,
    kind: TokenKind,
    (fp, cache): (&Fingerprinter, &mut FingerprintCache),
) -> AuthEvent {
    AuthEvent {
        time: rec.time.unwrap_or_default(),
        source,
        token: (rec.token.as_deref()).and_then(|t| identify_cached(t, kind, fp, cache)),
        alias: (rec.alias.as_deref()).and_then(|t| identify_cached(t, kind, fp, cache)),
        ip: rec.ip,
        user: rec.user.map(|u| u.into_owned().into_boxed_str()),
        outcome: rec.outcome,
        status: rec.status,
    }
}

fn flush(
    stage: &SourceStage,
    c: &mut BatchCounts,
    totals: &mut Totals,
    lag: Option<&prometheus::Histogram>,
) {
    let m = &stage.metrics;
    let rejected: u64 = c.rejected.iter().sum();
    m.checks.inc_by(c.checks);
    for (i, n) in c.rejected.iter().enumerate() {
        if *n > 0 {
            m.rejected[i].inc_by(*n);
        }
    }
    m.parsed.inc_by(c.parsed);
    m.skipped.inc_by(c.skipped);
    m.malformed.inc_by(c.malformed);
    for (reason, n) in c.malformed_by.drain(..) {
        m.malformed_reason(reason, n);
        bump(&mut totals.malformed_by, reason, n);
    }
    for (reason, n) in c.skipped_by.drain(..) {
        m.skipped_reason(reason, n);
        bump(&mut totals.skipped_by, reason, n);
    }
    if let (Some(h), Some(t)) = (lag, c.max_time) {
        h.observe((EventTime::now().as_millis() - t.as_millis()) as f64 / 1000.0);
    }
    totals.lines += c.parsed + c.skipped + c.malformed;
    totals.events += c.checks;
    totals.rejected += rejected;
    totals.skipped += c.skipped;
    totals.malformed += c.malformed;
    let keep = std::mem::take(&mut c.malformed_by);
    let keep_skipped = std::mem::take(&mut c.skipped_by);
    *c = BatchCounts {
        malformed_by: keep,
        skipped_by: keep_skipped,
        ..BatchCounts::default()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{build, ParserSpec, Preset};

    /// Collects events.
    struct Keep(std::sync::Arc<std::sync::Mutex<Vec<AuthEvent>>>);

    impl EventSink for Keep {
        fn event(&mut self, ev: AuthEvent) {
            self.0.lock().unwrap().push(ev);
        }
    }

    #[test]
    fn a_transport_time_fills_in_only_for_lines_without_one() {
        let spec = ParserSpec {
            preset: Preset::Regex,
            pattern: Some(r"^(?P<token>\S+) (?P<status>\d+)(?: (?P<ts>\S+))?$".into()),
            ..ParserSpec::default()
        };
        let m = crate::metrics::Metrics::new();
        let stage = SourceStage {
            name: "s".into(),
            parser: build(&spec).unwrap(),
            token_kind: TokenKind::Id,
            metrics: m.source("s"),
        };
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fp = Fingerprinter::new(b"0123456789abcdef0123456789abcdef");
        let mut p = Pipeline::new(vec![stage], fp, Some(Box::new(Keep(got.clone()))));
        let t = EventTime::from_millis(1_000_000);
        p.process(LineBatch {
            source: 0,
            buf: b"a 200\nb 200 1970-01-01T00:00:05Z\n".to_vec(),
            ack: None,
            times: vec![t, t],
        });
        let times: Vec<i64> = got
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.time.as_millis())
            .collect();
        assert_eq!(times, vec![1_000_000, 5_000]);
    }
}
