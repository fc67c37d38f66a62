//! Scheduled jobs: the `[[schedule]]` entries of the host config (docs/schedules.md).
//!
//! - [`calendar`]: the calendar grammar and the pure `next_after(instant, zone)`.
//! - [`clock`]: the injected time source ([`SystemClock`], [`ManualClock`] for tests).
//! - [`scheduler`]: the loop the daemon runs ([`Scheduler`]): sleeps until the earliest due
//!   schedule, starts it as a task, catches up once after downtime, skips overlaps.
//! - `run`: one run of a schedule (its targets one after the other, each failure kept to its
//!   target), recorded in the registry; `Engine::schedules`, `Engine::schedule_run_now`.
//! - `edit`: `Engine::schedule_put` / `schedule_delete`, which rewrite only the
//!   `[[schedule]]` tables of the config file.

pub mod calendar;
pub mod clock;
mod edit;
mod run;
pub mod scheduler;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use corral_types::{CalendarCheck, ScheduleRun, ScheduleSpec};

use crate::error::EngineError;

pub use calendar::{Calendar, CalendarError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use scheduler::Scheduler;

/// The engine's schedule state (one per engine).
pub(crate) struct EngineSchedules {
    /// The current `[[schedule]]` list (the config's, then as `schedule_put`/`delete` left it).
    specs: Mutex<Vec<ScheduleSpec>>,
    /// Schedules with a run going in this process.
    running: Mutex<HashSet<String>>,
    /// Each run when it starts, is skipped, and ends.
    tx: tokio::sync::broadcast::Sender<ScheduleRun>,
    /// Wakes the scheduler when the list changes.
    changed: tokio::sync::Notify,
    /// Serialises config file edits in this process.
    edit: Mutex<()>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EngineSchedules {
    pub(crate) fn new(specs: Vec<ScheduleSpec>) -> EngineSchedules {
        EngineSchedules {
            specs: Mutex::new(specs),
            running: Mutex::new(HashSet::new()),
            tx: tokio::sync::broadcast::channel(64).0,
            changed: tokio::sync::Notify::new(),
            edit: Mutex::new(()),
        }
    }
}

fn ms(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

/// A time for people, in the host's zone: `Mon 2025-06-02 22:30 CEST`.
pub fn local_time(unix_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(t) => t
            .to_zoned(SystemClock.time_zone())
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => unix_ms.to_string(),
    }
}

/// Parses a calendar expression and lists its next `count` times from now, in the host's
/// zone (`corral schedule check`). A bad expression is bad input, with what is wrong.
pub fn check_calendar(expr: &str, count: usize) -> Result<CalendarCheck, EngineError> {
    let cal = Calendar::parse(expr)
        .map_err(|e| EngineError::BadRequest(format!("calendar {e} (the grammar and examples: docs/schedules.md)")))?;
    let tz = SystemClock.time_zone();
    let next_ms: Vec<i64> = cal
        .upcoming(SystemClock.now(), &tz, count)
        .into_iter()
        .map(ms)
        .collect();
    Ok(CalendarCheck {
        calendar: expr.trim().to_string(),
        normalized: cal.to_string(),
        time_zone: tz.iana_name().unwrap_or("local").to_string(),
        next: next_ms.iter().map(|m| local_time(*m)).collect(),
        next_ms,
    })
}
