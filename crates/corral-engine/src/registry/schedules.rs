//! Schedule runs (schema v5): one row per run of a scheduled job, written by the process that
//! runs it (a `running` row first, completed at the end), read by anyone.

use corral_types::{ScheduleAction, ScheduleOutcome, ScheduleRun, ScheduleTarget};
use rusqlite::{params, Row};

use super::Registry;
use crate::error::EngineError;

/// How many runs of each schedule are kept.
const KEEP_RUNS: i64 = 200;

const COLUMNS: &str =
    "id, schedule, action, slot_ms, started_ms, finished_ms, outcome, caught_up, manual, message, targets, pid";

fn action_of(s: &str) -> ScheduleAction {
    match s {
        "backup" => ScheduleAction::Backup,
        "verify" => ScheduleAction::Verify,
        "prune" => ScheduleAction::Prune,
        _ => ScheduleAction::Gc,
    }
}

fn row_to_run(r: &Row<'_>) -> rusqlite::Result<(ScheduleRun, u32)> {
    let targets: String = r.get(10)?;
    Ok((
        ScheduleRun {
            id: r.get(0)?,
            schedule: r.get(1)?,
            action: action_of(&r.get::<_, String>(2)?),
            slot_ms: r.get(3)?,
            started_ms: r.get(4)?,
            finished_ms: r.get(5)?,
            outcome: ScheduleOutcome::parse(&r.get::<_, String>(6)?).unwrap_or(ScheduleOutcome::Failed),
            caught_up: r.get(7)?,
            manual: r.get(8)?,
            message: r.get(9)?,
            // Written by us as JSON; an unreadable list (edited by hand) shows as none.
            targets: serde_json::from_str::<Vec<ScheduleTarget>>(&targets).unwrap_or_default(),
        },
        r.get::<_, i64>(11)? as u32,
    ))
}

fn targets_json(run: &ScheduleRun) -> String {
    serde_json::to_string(&run.targets).unwrap_or_else(|_| "[]".into())
}

impl Registry {
    /// Records a run (usually `running`, or a `skipped` one complete at once); returns its id.
    pub fn schedule_run_insert(&self, run: &ScheduleRun, pid: u32) -> Result<i64, EngineError> {
        self.conn
            .execute(
                "INSERT INTO schedule_runs (schedule, action, slot_ms, started_ms, finished_ms, outcome, caught_up,
                     manual, message, targets, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run.schedule,
                    run.action.as_str(),
                    run.slot_ms,
                    run.started_ms,
                    run.finished_ms,
                    run.outcome.as_str(),
                    run.caught_up,
                    run.manual,
                    run.message,
                    targets_json(run),
                    pid
                ],
            )
            .map_err(self.db())?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "DELETE FROM schedule_runs WHERE schedule = ?1 AND outcome <> 'running' AND id <= (
                     SELECT id FROM schedule_runs WHERE schedule = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![run.schedule, KEEP_RUNS],
            )
            .map_err(self.db())?;
        Ok(id)
    }

    /// Stores a run's end: outcome, finish time, message and targets.
    pub fn schedule_run_finish(&self, run: &ScheduleRun) -> Result<(), EngineError> {
        self.conn
            .execute(
                "UPDATE schedule_runs SET finished_ms = ?2, outcome = ?3, message = ?4, targets = ?5 WHERE id = ?1",
                params![
                    run.id,
                    run.finished_ms,
                    run.outcome.as_str(),
                    run.message,
                    targets_json(run)
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// The newest runs first (each with the pid that ran it), of one schedule or all.
    pub fn schedule_runs(&self, schedule: Option<&str>, limit: usize) -> Result<Vec<(ScheduleRun, u32)>, EngineError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedule_runs WHERE ?1 IS NULL OR schedule = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![schedule, limit as i64], row_to_run)
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The latest calendar time a schedule has dealt with: the newest slot or start of any of
    /// its runs (manual, skipped and interrupted ones count). The scheduler's reference
    /// for catching up after downtime.
    pub fn schedule_reference_ms(&self, schedule: &str) -> Result<Option<i64>, EngineError> {
        self.conn
            .query_row(
                "SELECT MAX(MAX(COALESCE(slot_ms, started_ms)), MAX(started_ms)) FROM schedule_runs WHERE schedule = ?1",
                params![schedule],
                |r| r.get(0),
            )
            .map_err(self.db())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(schedule: &str, slot: Option<i64>, started: i64, outcome: ScheduleOutcome) -> ScheduleRun {
        ScheduleRun {
            id: 0,
            schedule: schedule.into(),
            action: ScheduleAction::Backup,
            slot_ms: slot,
            started_ms: started,
            finished_ms: None,
            outcome,
            caught_up: false,
            manual: slot.is_none(),
            message: None,
            targets: vec![],
        }
    }

    #[test]
    fn runs_are_recorded_finished_listed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        assert_eq!(reg.schedule_reference_ms("n").unwrap(), None);
        let mut r = run("n", Some(1000), 1005, ScheduleOutcome::Running);
        r.id = reg.schedule_run_insert(&r, 7).unwrap();
        r.outcome = ScheduleOutcome::Failed;
        r.finished_ms = Some(2000);
        r.message = Some("1 of 2 failed".into());
        r.targets = vec![ScheduleTarget {
            target: "web1".into(),
            ok: false,
            job: Some(3),
            backup: None,
            detail: None,
            error: Some("VM web1 is busy".into()),
        }];
        reg.schedule_run_finish(&r).unwrap();
        let (back, pid) = reg.schedule_runs(Some("n"), 10).unwrap().remove(0);
        assert_eq!((back, pid), (r.clone(), 7));
        assert_eq!(reg.schedule_reference_ms("n").unwrap(), Some(1005));
        // A manual run later counts too; other schedules do not.
        reg.schedule_run_insert(&run("n", None, 5000, ScheduleOutcome::Ok), 7)
            .unwrap();
        reg.schedule_run_insert(&run("other", Some(9000), 9000, ScheduleOutcome::Ok), 7)
            .unwrap();
        assert_eq!(reg.schedule_reference_ms("n").unwrap(), Some(5000));
        // A catch-up's slot may be before its start; the start is the reference.
        reg.schedule_run_insert(&run("c", Some(100), 700, ScheduleOutcome::Ok), 7)
            .unwrap();
        assert_eq!(reg.schedule_reference_ms("c").unwrap(), Some(700));

        for i in 0..KEEP_RUNS + 5 {
            reg.schedule_run_insert(&run("many", Some(i), i, ScheduleOutcome::Ok), 7)
                .unwrap();
        }
        assert_eq!(reg.schedule_runs(Some("many"), 1000).unwrap().len() as i64, KEEP_RUNS);
        assert_eq!(reg.schedule_runs(Some("n"), 1000).unwrap().len(), 2);
    }
}
