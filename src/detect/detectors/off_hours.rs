//! `off_hours` (DESIGN §6): after a learning period, a token used at an hour it has never
//! been active in.
//!
//! Each token keeps a 168-bit map of the UTC hours of the week it was active in (a token has
//! no known local time zone; UTC is stable and a fixed offset only shifts the map). An hour
//! is *familiar* if it, or one within `tolerance_hours`, was active: on the same weekday once
//! that weekday has been seen `weekday_min_weeks` times, before that on any day (so a
//! weekday-only worker's first Saturday is judged by hour of day, not flagged wholesale).
//! Use outside familiar hours is counted per run of adjacent hours; `min_checks` of them
//! fire, and the hour is then learned (one record per new habit). Familiar use keeps
//! teaching the map, so a schedule that drifts an hour at a time follows along.

#[path = "off_hours_week.rs"]
mod week;

use serde::{Deserialize, Serialize};

use super::TokenDetector;
use crate::config::detectors::off_hours::Settings;
use crate::detect::{Finding, Findings, Obs};
use crate::event::{Outcome, Reason};
use week::{day_of, hour_of_week, hour_tag, weekday_of, weekday_seen, Week};

/// This detector's part of a token's state (30 bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Active UTC hours of the week.
    week: Week,
    /// Day number of the first event.
    first_day: u16,
    /// Day number of the last event.
    last_day: u16,
    /// Days with activity before `last_day` (saturating).
    days: u8,
    /// Checks in the current run of unfamiliar hours.
    pending: u8,
    /// Hour tag of the last unfamiliar check.
    pending_hour: u16,
}

/// The detector.
pub struct OffHours {
    settings: Settings,
}

impl OffHours {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        OffHours {
            settings: settings.clone(),
        }
    }

    fn tolerance(&self) -> u16 {
        u16::from(self.settings.tolerance_hours.min(6))
    }

    /// Which view decides for hour-of-week `how` today, and whether the hour is familiar.
    fn familiar(&self, st: &State, today: u16, how: u16) -> (bool, &'static str) {
        let wd = weekday_of(today);
        let weeks = weekday_seen(st.first_day, today, wd);
        if weeks >= u16::from(self.settings.weekday_min_weeks) {
            (st.week.near_week(how, self.tolerance()), "hour_of_week")
        } else {
            (st.week.near_day(how, self.tolerance()), "hour_of_day")
        }
    }

    fn finding(&self, st: &State, obs: &Obs<'_>, how: u16, view: &str) -> Option<Finding> {
        let token = obs.ev.token.clone()?;
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let evidence = serde_json::json!({
            "weekday_utc": DAYS.get(usize::from(how / 24)).copied().unwrap_or("?"),
            "hour_utc": how % 24,
            "checks": st.pending,
            "min_checks": self.settings.min_checks,
            "usual_hours_utc": st.week.day_ranges(),
            "active_hours_of_week": st.week.count(),
            "learned_days": st.days,
            "tolerance_hours": self.tolerance(),
            "view": view,
        });
        Some(Finding::about_token(
            "off_hours",
            self.settings.severity,
            token,
            obs,
            evidence,
            self.settings.cooldown_secs,
        ))
    }
}

/// Counts active days; returns today's day number.
fn count_day(st: &mut State, ms: i64) -> u16 {
    let today = day_of(ms);
    if st.days == 0 && st.last_day == 0 && st.first_day == 0 {
        st.first_day = today;
        st.last_day = today;
    } else if today > st.last_day {
        st.days = st.days.saturating_add(1);
        st.last_day = today;
    }
    today
}

impl TokenDetector for OffHours {
    type State = State;

    fn name(&self) -> &'static str {
        "off_hours"
    }

    /// Nothing outside the tokens' parts (its weeks are in each token's `State`).
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
        super::write_nothing(out)
    }

    fn restore(&mut self, _v: serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn observe(&mut self, st: &mut State, obs: &Obs<'_>, out: &mut Findings) {
        if !authenticated(obs) {
            return;
        }
        let ms = obs.ev.time.as_millis();
        let today = count_day(st, ms);
        let how = hour_of_week(ms);
        if st.days < self.settings.learning_days {
            st.week.set(how);
            return;
        }
        let (familiar, view) = self.familiar(st, today, how);
        if familiar {
            st.week.set(how);
            return;
        }
        let tag = hour_tag(ms);
        let same_run = st.pending > 0 && tag.wrapping_sub(st.pending_hour) <= 1;
        st.pending = if same_run {
            st.pending.saturating_add(1)
        } else {
            1
        };
        st.pending_hour = tag;
        if st.pending >= self.settings.min_checks.max(1) {
            if let Some(f) = self.finding(st, obs, how, view) {
                out.push(f);
            }
            st.week.set(how);
            st.pending = 0;
        }
    }
}

/// True if the token itself was valid at this check (accepted, or refused only for lack of
/// permission): rejected revoked, expired or invalid tokens are `revoked_reuse`'s business.
/// Shared by the token detectors.
pub(crate) fn authenticated(obs: &Obs<'_>) -> bool {
    matches!(
        obs.ev.outcome,
        Outcome::Accepted | Outcome::Rejected(Reason::Forbidden)
    )
}

#[cfg(test)]
#[path = "off_hours_tests.rs"]
mod tests;
