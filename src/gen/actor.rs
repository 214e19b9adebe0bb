//! The seam between traffic sources and the merger: every user, service or attack is an
//! [`Actor`] that yields its own requests in time order.

use std::net::IpAddr;

use super::ev::Ev;
use super::geo::Loc;
use super::labels::Truth;

/// One entity's time-ordered request stream.
pub(crate) trait Actor {
    /// The next request, never earlier than the previous one; `None` when done.
    fn next(&mut self) -> Option<Ev>;

    /// The ground truth this actor stands for (hard cases, once the stream has run).
    fn truths(&self, _out: &mut Vec<Truth>) {}

    /// True for benign background traffic (the rejection storm hits it).
    fn is_normal(&self) -> bool {
        true
    }
}

/// Who a token belongs to and where it is normally used from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ident {
    /// Token id (48 bits).
    pub token: u64,
    /// User number.
    pub user: u32,
    /// Usual address.
    pub ip: IpAddr,
    /// Usual location.
    pub loc: Loc,
}

/// Requests an actor has promised for later (a retry after a 401, a stale key tried again),
/// kept sorted so the earliest comes out first.
#[derive(Debug, Default)]
pub(crate) struct Queue(Vec<Ev>);

impl Queue {
    /// Adds a request.
    pub(crate) fn push(&mut self, ev: Ev) {
        // Stored latest-first so `pop` takes from the end.
        let at = self.0.partition_point(|e| e.t > ev.t);
        self.0.insert(at, ev);
    }

    /// Time of the earliest queued request.
    pub(crate) fn peek_t(&self) -> Option<i64> {
        self.0.last().map(|e| e.t)
    }

    /// Takes the earliest queued request.
    pub(crate) fn pop(&mut self) -> Option<Ev> {
        self.0.pop()
    }
}

/// Merges an actor's main stream (one look-ahead request) with its queue.
#[derive(Debug, Default)]
pub(crate) struct Lookahead {
    main: Option<Ev>,
    /// Requests promised for later.
    pub queue: Queue,
}

impl Lookahead {
    /// The earlier of the queued and the main request; `fill` produces the next main request.
    pub(crate) fn next(&mut self, fill: impl FnOnce(&mut Queue) -> Option<Ev>) -> Option<Ev> {
        if self.main.is_none() {
            self.main = fill(&mut self.queue);
        }
        match (self.queue.peek_t(), self.main) {
            (Some(q), Some(m)) if q <= m.t => self.queue.pop(),
            (_, Some(_)) => self.main.take(),
            (_, None) => self.queue.pop(),
        }
    }
}

/// A finished list of requests (an attack), replayed in time order.
pub(crate) struct Scripted {
    /// Remaining requests, latest first.
    rest: Vec<Ev>,
}

impl Scripted {
    /// Replays `events` sorted by time.
    pub(crate) fn new(mut events: Vec<Ev>) -> Scripted {
        events.sort_by_key(|e| std::cmp::Reverse(e.t));
        Scripted { rest: events }
    }
}

impl Actor for Scripted {
    fn next(&mut self) -> Option<Ev> {
        self.rest.pop()
    }

    fn is_normal(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64) -> Ev {
        Ev::ok(t, None, "81.2.69.1".parse().expect("ip"), 0, 0, 0)
    }

    #[test]
    fn lookahead_merges_in_order() {
        let mut la = Lookahead::default();
        let mut mains = vec![ev(30), ev(10)];
        let mut out = Vec::new();
        la.queue.push(ev(20));
        la.queue.push(ev(5));
        while let Some(e) = la.next(|_| mains.pop()) {
            out.push(e.t);
        }
        assert_eq!(out, [5, 10, 20, 30]);
    }

    #[test]
    fn scripted_replays_sorted() {
        let mut s = Scripted::new(vec![ev(3), ev(1), ev(2)]);
        let ts: Vec<i64> = std::iter::from_fn(|| s.next()).map(|e| e.t).collect();
        assert_eq!(ts, [1, 2, 3]);
        assert!(!s.is_normal());
    }
}
