//! The freeze circuit breaker: at most N freezes per sliding window.

use std::collections::VecDeque;

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the cap: go ahead.
    Yes,
    /// Over the cap; `opened` is true for the first refusal of an episode.
    No {
        /// The breaker just opened (send the notice now).
        opened: bool,
    },
}

/// Sliding-window freeze counter.
#[derive(Debug, Clone)]
pub struct Breaker {
    max: usize,
    window_ms: i64,
    times: VecDeque<i64>,
    open: bool,
}

impl Breaker {
    /// At most `max` admissions per `window_ms`.
    pub fn new(max: u32, window_ms: i64) -> Breaker {
        Breaker {
            max: usize::try_from(max).unwrap_or(usize::MAX).max(1),
            window_ms: window_ms.max(1),
            times: VecDeque::new(),
            open: false,
        }
    }

    /// Asks for one freeze at `now_ms`.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        self.expire(now_ms);
        if self.times.len() < self.max {
            self.times.push_back(now_ms);
            return Admit::Yes;
        }
        let opened = !self.open;
        self.open = true;
        Admit::No { opened }
    }

    /// True while freezes are being refused; closes once the window has room again.
    pub fn is_open(&mut self, now_ms: i64) -> bool {
        self.expire(now_ms);
        self.open
    }

    fn expire(&mut self, now_ms: i64) {
        while self
            .times
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= self.window_ms)
        {
            self.times.pop_front();
        }
        if self.open && self.times.len() < self.max {
            self.open = false;
            tracing::warn!("freeze circuit breaker closed: freezes resume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_window_and_reports_opening_once() {
        let mut b = Breaker::new(2, 1000);
        assert_eq!(b.admit(0), Admit::Yes);
        assert_eq!(b.admit(10), Admit::Yes);
        assert_eq!(b.admit(20), Admit::No { opened: true });
        assert_eq!(b.admit(30), Admit::No { opened: false });
        assert!(b.is_open(999));
        assert_eq!(b.admit(1000), Admit::Yes);
        assert!(!b.is_open(1000));
        assert_eq!(b.admit(1005), Admit::No { opened: true });
    }
}
