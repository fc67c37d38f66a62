//! The loop `corral serve` runs: sleep until the earliest due schedule, start each due one as
//! a task, and work out the next time.
//!
//! Rules (docs/schedules.md):
//! - **catch-up**: at start, a schedule whose next time after its last recorded run (any run:
//!   scheduled, manual, skipped) has passed runs once, now, marked `caught_up`, however many
//!   times were missed; then it follows its calendar from now. A schedule that never ran has
//!   nothing to catch up. A run that starts more than [`LATE`] after its time (a suspended
//!   host, a stalled loop) is marked as a catch-up too.
//! - **overlap**: a schedule whose previous run is still going when its time comes is not
//!   started: the time is recorded as `skipped` and logged as a warning.
//! - an edited schedule (calendar or `enabled` changed) starts afresh from now.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use corral_types::ScheduleSpec;
use jiff::{SignedDuration, Timestamp};
use tokio::task::JoinSet;

use super::run::Trigger;
use super::{Calendar, Clock};
use crate::engine::Engine;

/// A run this late is a catch-up.
pub const LATE: SignedDuration = SignedDuration::from_secs(60);
/// Missed times are counted up to this many (for the message).
const COUNT_MAX: usize = 1000;

pub struct Scheduler {
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
}

/// What the loop knows about one schedule.
struct Plan {
    calendar: String,
    enabled: bool,
    parsed: Option<Calendar>,
    /// The next time it is due (`None`: disabled, or a calendar that matches nothing).
    due: Option<Timestamp>,
}

impl Scheduler {
    /// `corral serve`: `Scheduler::new(engine.clone(), SystemClock)`; tests pass a
    /// [`super::ManualClock`].
    pub fn new(engine: Arc<Engine>, clock: impl Clock) -> Scheduler {
        Scheduler {
            engine,
            clock: Arc::new(clock),
        }
    }

    /// Runs until `shutdown` resolves, then waits for the runs in flight to end (wrap it in
    /// a timeout to bound that; dropping the future aborts them, and they read as
    /// interrupted).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut plans: HashMap<String, Plan> = HashMap::new();
        let mut tasks = JoinSet::new();
        tracing::info!(
            schedules = self.engine.schedule_specs().len(),
            "scheduler started ({})",
            self.clock.time_zone().iana_name().unwrap_or("local time")
        );
        loop {
            let now = self.clock.now();
            let specs = self.engine.schedule_specs();
            self.update_plans(&mut plans, &specs, now);
            for spec in &specs {
                let Some(plan) = plans.get_mut(&spec.name) else {
                    continue;
                };
                let (Some(due), Some(cal)) = (plan.due, plan.parsed.as_ref()) else {
                    continue;
                };
                if due > now {
                    continue;
                }
                plan.due = cal.next_after(now, &self.clock.time_zone());
                self.start(&mut tasks, spec, cal, due, now);
            }
            while tasks.try_join_next().is_some() {}
            let wake = plans.values().filter_map(|p| p.due).min();
            let clock = self.clock.clone();
            let sleep = async move {
                match wake {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sleep => {}
                _ = self.engine.sched.changed.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("scheduler stopping; waiting for {} run(s) in flight", tasks.len());
        while tasks.join_next().await.is_some() {}
    }

    /// Adds new and edited schedules (working out their first due time), drops deleted ones.
    fn update_plans(&self, plans: &mut HashMap<String, Plan>, specs: &[ScheduleSpec], now: Timestamp) {
        plans.retain(|name, _| specs.iter().any(|s| &s.name == name));
        let tz = self.clock.time_zone();
        for spec in specs {
            let known = plans.get(&spec.name);
            if known.is_some_and(|p| p.calendar == spec.calendar && p.enabled == spec.enabled) {
                continue;
            }
            let parsed = match Calendar::parse(&spec.calendar) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(schedule = %spec.name, "never runs: calendar {e}");
                    None
                }
            };
            let due = match (&parsed, spec.enabled) {
                (Some(cal), true) => {
                    // New to this loop: after downtime, the last recorded run tells whether a
                    // time was missed. Edited: from now.
                    let reference = if known.is_some() {
                        None
                    } else {
                        match self.engine.reg().schedule_reference_ms(&spec.name) {
                            Ok(r) => r.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
                            Err(e) => {
                                tracing::warn!(schedule = %spec.name, "cannot read its last run: {e}");
                                None
                            }
                        }
                    };
                    cal.next_after(reference.unwrap_or(now).min(now), &tz)
                }
                _ => None,
            };
            plans.insert(
                spec.name.clone(),
                Plan {
                    calendar: spec.calendar.clone(),
                    enabled: spec.enabled,
                    parsed,
                    due,
                },
            );
        }
    }

    /// Starts the run due at `due`, or records it as skipped when one is still going.
    fn start(
        &self,
        tasks: &mut JoinSet<corral_types::ScheduleRun>,
        spec: &ScheduleSpec,
        cal: &Calendar,
        due: Timestamp,
        now: Timestamp,
    ) {
        let tz = self.clock.time_zone();
        let local = |t: Timestamp| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string();
        let claim = match self.engine.schedule_claim(&spec.name) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("the previous run is still going ({e})");
                self.engine.schedule_record_skip(spec, due, now, why);
                return;
            }
        };
        let late = now.duration_since(due) > LATE;
        let note = late.then(|| {
            let mut missed = 0;
            let mut t = Some(due);
            while let Some(x) = t.filter(|x| *x <= now && missed < COUNT_MAX) {
                missed += 1;
                t = cal.next_after(x, &tz);
            }
            let times = if missed == 1 {
                "1 time".to_string()
            } else {
                format!("{missed} times")
            };
            format!("catch-up: due at {} ({times} missed)", local(due))
        });
        if let Some(n) = &note {
            tracing::warn!(schedule = %spec.name, "{n}");
        }
        let trigger = Trigger {
            slot: Some(due),
            caught_up: late,
            note,
        };
        tasks.spawn(
            self.engine
                .clone()
                .schedule_execute(claim, spec.clone(), trigger, self.clock.clone()),
        );
    }
}
