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

use corral_types::{ScheduleRun, ScheduleSpec};

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
