//! One run of a schedule: resolve the selection now, work through the targets one after the
//! other (a failing VM does not stop the others), record it all in the registry. Also the
//! engine's read side for front ends: `schedules()`, `schedule_runs()`, `schedule_run_now()`.

use std::sync::Arc;

use corral_types::{
    ByteSize, ScheduleAction, ScheduleOutcome, ScheduleRun, ScheduleSpec, ScheduleStatus, ScheduleTarget,
};
use jiff::Timestamp;
use tokio::sync::broadcast::error::TryRecvError;

use super::{locked, ms, Calendar, Clock, SystemClock};
use crate::engine::backup::PrunePolicy;
use crate::engine::jobs::pid_alive;
use crate::engine::Engine;
use crate::error::EngineError;

/// Why a run starts.
pub(crate) struct Trigger {
    /// The calendar time it is for (`None`: started by hand).
    pub slot: Option<Timestamp>,
    /// It makes up for missed times.
    pub caught_up: bool,
    /// Goes in front of the run's message (what a catch-up makes up for).
    pub note: Option<String>,
}

/// A schedule marked as running in this process; the mark goes when this is dropped, so a
/// run that panics or is aborted never leaves its schedule blocked.
pub(crate) struct Claim {
    engine: Arc<Engine>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        locked(&self.engine.sched.running).remove(&self.name);
    }
}

fn size(b: u64) -> String {
    ByteSize(b).approx()
}

fn target(name: &str, result: Result<String, EngineError>) -> ScheduleTarget {
    let (ok, detail, error) = match result {
        Ok(d) => (true, Some(d), None),
        Err(e) => (false, None, Some(e.to_string())),
    };
    ScheduleTarget {
        target: name.to_string(),
        ok,
        job: None,
        backup: None,
        detail,
        error,
    }
}

fn no_backups_yet(name: &str) -> ScheduleTarget {
    target(name, Ok("no backups yet: nothing to do".into()))
}

/// Runs a synchronous engine operation (store I/O, waits on the store lock) off the async
/// threads.
async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    let e = engine.clone();
    tokio::task::spawn_blocking(move || f(&e)).await.unwrap_or_else(|j| {
        Err(EngineError::Tool {
            what: "scheduled run".into(),
            message: format!("its worker thread failed: {j}"),
        })
    })
}

impl Engine {
    /// The current schedules (the config's `[[schedule]]` list, as edited since).
    pub fn schedule_specs(&self) -> Vec<ScheduleSpec> {
        locked(&self.sched.specs).clone()
    }

    pub fn schedule_spec(&self, name: &str) -> Result<ScheduleSpec, EngineError> {
        self.schedule_specs()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| EngineError::NoSuchSchedule(name.to_string()))
    }

    /// Every schedule run of this process as it starts, is skipped and ends (for the
    /// daemon's event stream).
    pub fn schedule_events(&self) -> tokio::sync::broadcast::Receiver<ScheduleRun> {
        self.sched.tx.subscribe()
    }

    /// A row that says running, of a process that is gone (or of this one, which no longer
    /// runs it), reads as interrupted.
    fn derive_run(&self, (mut run, pid): (ScheduleRun, u32)) -> ScheduleRun {
        if run.outcome == ScheduleOutcome::Running {
            let alive = if pid == std::process::id() {
                locked(&self.sched.running).contains(&run.schedule)
            } else {
                pid_alive(pid)
            };
            if !alive {
                run.outcome = ScheduleOutcome::Interrupted;
            }
        }
        run
    }

    /// Recent runs, newest first, of one schedule or all (also of schedules since deleted).
    pub fn schedule_runs(&self, name: Option<&str>, limit: usize) -> Result<Vec<ScheduleRun>, EngineError> {
        let rows = self.reg().schedule_runs(name, limit)?;
        Ok(rows.into_iter().map(|r| self.derive_run(r)).collect())
    }

    /// Every schedule with its next run (by the wall clock, in the host's zone), its last
    /// result and whether it runs now.
    pub fn schedules(&self) -> Result<Vec<ScheduleStatus>, EngineError> {
        let (now, tz) = (SystemClock.now(), SystemClock.time_zone());
        self.schedule_specs()
            .into_iter()
            .map(|spec| {
                let next_run_ms = match (spec.enabled, Calendar::parse(&spec.calendar)) {
                    (true, Ok(c)) => c.next_after(now, &tz).map(ms),
                    _ => None,
                };
                let runs = self.schedule_runs(Some(&spec.name), 20)?;
                let running = locked(&self.sched.running).contains(&spec.name)
                    || runs.iter().any(|r| r.outcome == ScheduleOutcome::Running);
                let last_run = runs.into_iter().find(|r| r.outcome != ScheduleOutcome::Running);
                Ok(ScheduleStatus {
                    spec,
                    next_run_ms,
                    last_run,
                    running,
                })
            })
            .collect()
    }

    /// Starts a run of the schedule now (the web page's "run now", `corral schedule run`),
    /// even if it is disabled. Refused while it runs (here or in another corral). The run
    /// goes on as a tokio task; await the handle for its result, or drop it.
    pub fn schedule_run_now(self: &Arc<Self>, name: &str) -> Result<tokio::task::JoinHandle<ScheduleRun>, EngineError> {
        let spec = self.schedule_spec(name)?;
        let claim = self.schedule_claim(name)?;
        let trigger = Trigger {
            slot: None,
            caught_up: false,
            note: None,
        };
        Ok(tokio::spawn(self.clone().schedule_execute(
            claim,
            spec,
            trigger,
            Arc::new(SystemClock),
        )))
    }

    /// Marks the schedule as running, unless a run of it is going here or in another corral.
    pub(crate) fn schedule_claim(self: &Arc<Self>, name: &str) -> Result<Claim, EngineError> {
        let mut running = locked(&self.sched.running);
        if running.contains(name) {
            return Err(EngineError::ScheduleBusy {
                name: name.to_string(),
                pid: None,
            });
        }
        let me = std::process::id();
        let other = self
            .reg()
            .schedule_runs(Some(name), 5)?
            .into_iter()
            .find(|(r, pid)| r.outcome == ScheduleOutcome::Running && *pid != me && pid_alive(*pid));
        if let Some((_, pid)) = other {
            return Err(EngineError::ScheduleBusy {
                name: name.to_string(),
                pid: Some(pid),
            });
        }
        running.insert(name.to_string());
        Ok(Claim {
            engine: self.clone(),
            name: name.to_string(),
        })
    }

    /// Records (and logs) a due time that was skipped.
    pub(crate) fn schedule_record_skip(&self, spec: &ScheduleSpec, slot: Timestamp, now: Timestamp, why: String) {
        tracing::warn!(schedule = %spec.name, "skipped the run due at {slot}: {why}");
        let mut run = ScheduleRun {
            id: 0,
            schedule: spec.name.clone(),
            action: spec.action,
            slot_ms: Some(ms(slot)),
            started_ms: ms(now),
            finished_ms: Some(ms(now)),
            outcome: ScheduleOutcome::Skipped,
            caught_up: false,
            manual: false,
            message: Some(why),
            targets: vec![],
        };
        match self.reg().schedule_run_insert(&run, std::process::id()) {
            Ok(id) => run.id = id,
            Err(e) => tracing::warn!(schedule = %spec.name, "cannot record the skipped run: {e}"),
        }
        let _ = self.sched.tx.send(run);
    }

    /// Runs a claimed schedule to its end and records it; the result is also the last event.
    pub(crate) async fn schedule_execute(
        self: Arc<Self>,
        claim: Claim,
        spec: ScheduleSpec,
        trigger: Trigger,
        clock: Arc<dyn Clock>,
    ) -> ScheduleRun {
        let mut run = ScheduleRun {
            id: 0,
            schedule: spec.name.clone(),
            action: spec.action,
            slot_ms: trigger.slot.map(ms),
            started_ms: ms(clock.now()),
            finished_ms: None,
            outcome: ScheduleOutcome::Running,
            caught_up: trigger.caught_up,
            manual: trigger.slot.is_none(),
            message: trigger.note.clone(),
            targets: vec![],
        };
        let recorded = self.reg().schedule_run_insert(&run, std::process::id());
        match recorded {
            Ok(id) => run.id = id,
            Err(e) => tracing::warn!(schedule = %spec.name, "cannot record the run: {e}"),
        }
        tracing::info!(schedule = %spec.name, action = %spec.action, "scheduled run started");
        let _ = self.sched.tx.send(run.clone());

        let summary = match self.schedule_targets(&spec).await {
            Ok(targets) => {
                let failed: Vec<&str> = targets.iter().filter(|t| !t.ok).map(|t| t.target.as_str()).collect();
                let n = targets.len();
                let verb = match spec.action {
                    ScheduleAction::Backup => "backed up",
                    ScheduleAction::Verify => "verified",
                    ScheduleAction::Prune => "pruned",
                    ScheduleAction::Gc => "collected",
                };
                let s = if failed.is_empty() {
                    run.outcome = ScheduleOutcome::Ok;
                    format!("{n} of {n} {verb}")
                } else {
                    run.outcome = ScheduleOutcome::Failed;
                    format!("{} of {n} {verb}; failed: {}", n - failed.len(), failed.join(", "))
                };
                run.targets = targets;
                s
            }
            Err(e) => {
                run.outcome = ScheduleOutcome::Failed;
                e.to_string()
            }
        };
        run.message = Some(match &trigger.note {
            Some(n) => format!("{n}; {summary}"),
            None => summary,
        });
        run.finished_ms = Some(ms(clock.now()));
        let stored = self.reg().schedule_run_finish(&run);
        if let Err(e) = stored {
            tracing::warn!(schedule = %spec.name, "cannot record the run's result: {e}");
        }
        match run.outcome {
            ScheduleOutcome::Ok => {
                tracing::info!(schedule = %spec.name, "scheduled run ok: {}", run.message.as_deref().unwrap_or(""))
            }
            _ => {
                tracing::warn!(schedule = %spec.name, "scheduled run failed: {}", run.message.as_deref().unwrap_or(""))
            }
        }
        // No longer running before anyone hears that it ended.
        drop(claim);
        let _ = self.sched.tx.send(run.clone());
        run
    }

    /// The VMs a backup, verify or prune schedule selects, resolved now (tags as `corral
    /// backup run --tag` does). A VM named in `vms` that no longer exists is one failed
    /// target, not a failed run; `all` on a host without VMs selects none, which is no error.
    fn schedule_select(&self, spec: &ScheduleSpec) -> Result<Vec<String>, EngineError> {
        if spec.all {
            return Ok(self.records()?.iter().map(|r| r.spec.name.to_string()).collect());
        }
        if !spec.vms.is_empty() {
            let mut v = spec.vms.clone();
            v.sort();
            v.dedup();
            return Ok(v);
        }
        self.backup_select(&[], &spec.tags, false, &[]).map_err(|e| match e {
            EngineError::Invalid { message, .. } => EngineError::invalid("-", "selection", message),
            e => e,
        })
    }

    async fn schedule_targets(self: &Arc<Self>, spec: &ScheduleSpec) -> Result<Vec<ScheduleTarget>, EngineError> {
        let mut out = vec![];
        match spec.action {
            ScheduleAction::Backup => {
                for vm in self.schedule_select(spec)? {
                    out.push(self.scheduled_backup(&vm, spec).await);
                }
            }
            ScheduleAction::Verify if !self.store_exists() => out.push(no_backups_yet("store")),
            ScheduleAction::Verify if spec.all => {
                let r = blocking(self, |e| e.backup_verify(&[])).await;
                out.push(target("store", r.and_then(verify_detail)));
            }
            ScheduleAction::Verify => {
                for vm in self.schedule_select(spec)? {
                    if self.backup_list(Some(&vm))?.is_empty() {
                        out.push(no_backups_yet(&vm));
                        continue;
                    }
                    let v = vm.clone();
                    let r = blocking(self, move |e| e.backup_verify(&[v])).await;
                    out.push(target(&vm, r.and_then(verify_detail)));
                }
            }
            ScheduleAction::Prune if !self.store_exists() => out.push(no_backups_yet("store")),
            ScheduleAction::Prune => {
                let policy = PrunePolicy {
                    keep_last: spec.keep_last.unwrap_or(0),
                    keep_daily: spec.keep_daily.unwrap_or(0),
                    keep_weekly: spec.keep_weekly.unwrap_or(0),
                    keep_monthly: spec.keep_monthly.unwrap_or(0),
                };
                let vms = if spec.all {
                    self.backup_vms()?
                } else {
                    self.schedule_select(spec)?
                };
                for vm in vms {
                    let v = vm.clone();
                    let r = blocking(self, move |e| e.backup_prune(&v, &policy, false)).await;
                    out.push(target(
                        &vm,
                        r.map(|d| {
                            let kept = d.iter().filter(|x| x.keep).count();
                            format!("kept {kept}, removed {}", d.len() - kept)
                        }),
                    ));
                }
            }
            ScheduleAction::Gc if !self.store_exists() => out.push(no_backups_yet("store")),
            ScheduleAction::Gc => {
                let r = blocking(self, |e| e.store_gc_waiting()).await;
                out.push(target(
                    "store",
                    r.map(|g| {
                        format!(
                            "freed {} ({} chunks, {} packs deleted, {} repacked)",
                            size(g.bytes_freed),
                            g.chunks_freed,
                            g.packs_deleted,
                            g.packs_repacked
                        )
                    }),
                ));
            }
        }
        Ok(out)
    }

    /// One VM of a backup schedule, with the job its backup ran as.
    async fn scheduled_backup(&self, vm: &str, spec: &ScheduleSpec) -> ScheduleTarget {
        let mut jobs = self.job_events();
        let r = self.backup_run(vm, spec.full, spec.skeleton).await;
        let mut job = None;
        loop {
            match jobs.try_recv() {
                Ok(j) if j.vm == vm && j.kind == "backup" => job = Some(j.id),
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let backup = r.as_ref().ok().map(|b| b.id.clone());
        let mut t = target(
            vm,
            r.map(|b| {
                let mut d = format!(
                    "{}: read {}, new {}",
                    b.kind,
                    size(b.stats.bytes_read),
                    size(b.stats.new_bytes)
                );
                for w in &b.warnings {
                    d.push_str(&format!("; warning: {w}"));
                }
                d
            }),
        );
        t.job = job;
        t.backup = backup;
        t
    }
}

fn verify_detail(r: corral_store::VerifyReport) -> Result<String, EngineError> {
    if r.problems.is_empty() && r.broken.is_empty() {
        return Ok(format!(
            "{} backup(s), {} chunks ({}) intact",
            r.backups_checked,
            r.chunks_checked,
            size(r.bytes_checked)
        ));
    }
    Err(EngineError::Tool {
        what: "backup verify".into(),
        message: format!(
            "{} bad chunk(s) and {} unreadable backup(s); `corral backup verify` names them",
            r.problems.len(),
            r.broken.len()
        ),
    })
}
