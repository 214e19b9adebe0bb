//! Builds every actor for a run and merges their streams, in time order, into one log.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Write};

use super::actor::{Actor, Scripted};
use super::attacks::{self, Ctx};
use super::ev::Ev;
use super::labels::Truth;
use super::plan::Plan;
use super::population::{Builder, TokenIds};
use super::rng::{mix64, Rng};
use super::write::LineWriter;
use super::{GenOptions, Scenario};
use crate::event::Reason;

/// Share of normal requests the rejection storm turns into 401s.
const STORM_SHARE: f64 = 0.85;

/// Everything that will write lines, and the attacks' labels.
pub(crate) struct World {
    actors: Vec<Box<dyn Actor>>,
    attacks: Vec<(Scenario, Truth)>,
    storm: Option<(i64, i64)>,
    skipped: Vec<Scenario>,
    /// Distinct token ids of the normal population.
    pub tokens: u64,
}

/// What the merge wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Run {
    pub lines: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl World {
    /// The population plus the requested attacks.
    pub(crate) fn build(opts: &GenOptions, plan: &Plan) -> World {
        let mut ids = TokenIds::new(opts.seed);
        let pop = Builder::new(plan, opts.seed, &mut ids).build(opts.tokens, plan.revoke_at());
        let tokens = ids.count();
        let mut actors = pop.actors;
        let mut ctx = Ctx {
            plan,
            victims: pop.victims,
            crowd: &pop.crowd,
            ids: &mut ids,
            rng: Rng::stream(opts.seed, 3),
        };
        let (mut attacks, mut skipped, mut storm) = (Vec::new(), Vec::new(), None);
        for (n, &scenario) in opts.scenarios.iter().enumerate() {
            ctx.rng = Rng::stream(opts.seed, 100 + n as u64 + 16 * scenario as u64);
            match attacks::build(scenario, &mut ctx) {
                Some(attack) => {
                    if scenario == Scenario::RejectionStorm {
                        storm = Some((attack.truth.start, attack.truth.end));
                    }
                    attacks.push((scenario, attack.truth));
                    actors.push(Box::new(Scripted::new(attack.events)));
                }
                None => skipped.push(scenario),
            }
        }
        World {
            actors,
            attacks,
            storm,
            skipped,
            tokens,
        }
    }

    /// Labels for what was written: attacks that fully made it, hard cases clipped to the run.
    pub(crate) fn truths(&self, plan: &Plan, run: &Run) -> (Vec<Truth>, Vec<Scenario>) {
        let last = run.last.unwrap_or(i64::MIN);
        let mut skipped = self.skipped.clone();
        let mut out = Vec::new();
        for (scenario, truth) in &self.attacks {
            if truth.end <= last {
                out.push(truth.clone());
            } else {
                skipped.push(*scenario);
            }
        }
        let mut hard = Vec::new();
        for actor in &self.actors {
            actor.truths(&mut hard);
        }
        for mut truth in hard {
            truth.start = truth.start.max(plan.start);
            truth.end = truth.end.min(last);
            if truth.start <= truth.end {
                out.push(truth);
            }
        }
        (out, skipped)
    }
}

/// Merges all streams into `out`, stopping after `opts.lines` lines if set.
pub(crate) fn run(world: &mut World, opts: &GenOptions, out: &mut dyn Write) -> io::Result<Run> {
    let mut w = BufWriter::with_capacity(1 << 17, out);
    let mut fmt = LineWriter::new(opts.format, mix64(opts.seed));
    let mut storm_rng = Rng::stream(opts.seed, 4);
    let mut heads: Vec<Option<Ev>> = Vec::with_capacity(world.actors.len());
    let mut heap = BinaryHeap::with_capacity(world.actors.len());
    for (i, actor) in world.actors.iter_mut().enumerate() {
        let head = actor.next();
        if let Some(ev) = head {
            heap.push(Reverse((ev.t, i)));
        }
        heads.push(head);
    }
    let limit = opts.lines.unwrap_or(u64::MAX);
    let mut run = Run::default();
    while run.lines < limit {
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        let Some(mut ev) = heads.get_mut(i).and_then(Option::take) else {
            continue;
        };
        let Some(actor) = world.actors.get_mut(i) else {
            continue;
        };
        let in_storm = world.storm.is_some_and(|(a, b)| (a..=b).contains(&ev.t));
        if in_storm && actor.is_normal() && ev.reason.is_none() && storm_rng.chance(STORM_SHARE) {
            ev = ev.rejected(Reason::Invalid);
            ev.bytes = 48;
        }
        w.write_all(fmt.line(&ev))?;
        run.lines += 1;
        run.first.get_or_insert(ev.t);
        run.last = Some(ev.t);
        if let Some(next) = actor.next() {
            debug_assert!(next.t >= ev.t, "actor {i} went back in time");
            // Each stream is ordered; clamping only guards the output's order against a bug.
            let next = next.at(next.t.max(ev.t));
            heap.push(Reverse((next.t, i)));
            heads[i] = Some(next);
        }
    }
    w.flush()?;
    Ok(run)
}
