//! Job rows: written by the process running the job, read by anyone.

use corral_types::{JobInfo, JobState};
use rusqlite::{params, OptionalExtension, Row};

use super::Registry;
use crate::error::EngineError;

fn state_of(s: &str) -> JobState {
    match s {
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "interrupted" => JobState::Interrupted,
        _ => JobState::Failed,
    }
}

fn row_to_job(r: &Row<'_>) -> rusqlite::Result<JobInfo> {
    Ok(JobInfo {
        id: r.get(0)?,
        vm: r.get(1)?,
        kind: r.get(2)?,
        target: r.get(3)?,
        state: state_of(&r.get::<_, String>(4)?),
        done: r.get::<_, i64>(5)? as u64,
        total: r.get::<_, i64>(6)? as u64,
        started_ms: r.get(7)?,
        finished_ms: r.get(8)?,
        message: r.get(9)?,
        pid: r.get::<_, i64>(10)? as u32,
        bytes: None,
    })
}

/// How many jobs `corral job list` can look back on.
const KEEP_JOBS: i64 = 1000;

const COLUMNS: &str = "id, vm, kind, target, state, done, total, started_ms, finished_ms, message, pid";

impl Registry {
    pub fn job_insert(
        &self,
        vm: &str,
        kind: &str,
        target: &str,
        pid: u32,
        started_ms: i64,
    ) -> Result<i64, EngineError> {
        self.conn
            .execute(
                "INSERT INTO jobs (vm, kind, target, state, started_ms, pid) VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                params![vm, kind, target, started_ms, pid],
            )
            .map_err(self.db())?;
        let id = self.conn.last_insert_rowid();
        // Keep the history bounded: the newest KEEP_JOBS finished jobs (running ones always).
        self.conn
            .execute(
                "DELETE FROM jobs WHERE state <> 'running' AND id <= ?1",
                params![id - KEEP_JOBS],
            )
            .map_err(self.db())?;
        Ok(id)
    }

    pub fn job_progress(&self, id: i64, done: u64, total: u64) -> Result<(), EngineError> {
        self.conn
            .execute(
                "UPDATE jobs SET done = ?2, total = ?3 WHERE id = ?1",
                params![id, done as i64, total as i64],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn job_finish(&self, job: &JobInfo) -> Result<(), EngineError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = ?2, done = ?3, total = ?4, finished_ms = ?5, message = ?6 WHERE id = ?1",
                params![
                    job.id,
                    job.state.as_str(),
                    job.done as i64,
                    job.total as i64,
                    job.finished_ms,
                    job.message
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn job(&self, id: i64) -> Result<Option<JobInfo>, EngineError> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), [id], row_to_job)
            .optional()
            .map_err(self.db())
    }

    /// The newest jobs first, optionally of one VM.
    pub fn jobs(&self, vm: Option<&str>, limit: usize) -> Result<Vec<JobInfo>, EngineError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE ?1 IS NULL OR vm = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![vm, limit as i64], row_to_job)
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}

/// What monitoring counts of the job history: every job kind recorded (so each has a series
/// from the start), and the failed jobs that finished at or after a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFailures {
    pub kinds: Vec<String>,
    /// `(id, kind)` of each failed job, by id.
    pub failed: Vec<(i64, String)>,
}

impl Registry {
    /// The job kinds and the failures since `since_ms` (Unix ms of `finished_ms`): two small
    /// queries over at most [`KEEP_JOBS`] rows plus the running ones.
    pub fn job_failures_since(&self, since_ms: i64) -> Result<JobFailures, EngineError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT kind FROM jobs ORDER BY kind")
            .map_err(self.db())?;
        let kinds = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.db())?
            .collect::<Result<_, _>>()
            .map_err(self.db())?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, kind FROM jobs WHERE state = 'failed' AND finished_ms >= ?1 ORDER BY id")
            .map_err(self.db())?;
        let failed = stmt
            .query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.db())?
            .collect::<Result<_, _>>()
            .map_err(self.db())?;
        Ok(JobFailures { kinds, failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_recorded_finished_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        let id = reg.job_insert("web1", "clone", "web1 → web2", 42, 1000).unwrap();
        reg.job_progress(id, 5, 10).unwrap();
        let j = reg.job(id).unwrap().unwrap();
        assert_eq!((j.state, j.done, j.total, j.pid), (JobState::Running, 5, 10, 42));
        let mut done = j.clone();
        done.state = JobState::Failed;
        done.message = Some("disk full".into());
        done.finished_ms = Some(2000);
        reg.job_finish(&done).unwrap();
        assert_eq!(reg.job(id).unwrap().unwrap(), done);
        let other = reg.job_insert("db1", "commit", "disk0", 42, 3000).unwrap();
        assert_eq!(reg.jobs(Some("db1"), 10).unwrap().len(), 1);
        assert_eq!(reg.jobs(None, 10).unwrap()[0].id, other, "newest first");

        // Only finished jobs beyond the newest KEEP_JOBS go.
        for _ in 0..KEEP_JOBS {
            let n = reg.job_insert("x", "clone", "t", 1, 0).unwrap();
            let mut j = reg.job(n).unwrap().unwrap();
            j.state = JobState::Succeeded;
            reg.job_finish(&j).unwrap();
        }
        assert!(reg.job(id).unwrap().is_none(), "the oldest finished job was pruned");
        assert!(reg.job(other).unwrap().is_some(), "a running job is never pruned");
    }

    #[test]
    fn failures_since_a_time_and_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        assert_eq!(reg.job_failures_since(0).unwrap(), JobFailures::default());
        let finish = |kind: &str, state: JobState, at: i64| {
            let id = reg.job_insert("v", kind, "t", 1, at - 10).unwrap();
            let mut j = reg.job(id).unwrap().unwrap();
            j.state = state;
            j.finished_ms = Some(at);
            reg.job_finish(&j).unwrap();
            id
        };
        finish("backup", JobState::Failed, 100); // before the time asked for
        let late = finish("backup", JobState::Failed, 200);
        finish("clone", JobState::Succeeded, 300);
        let restore = finish("restore", JobState::Failed, 400);
        reg.job_insert("commit", "commit", "t", 1, 500).unwrap(); // still running
        let f = reg.job_failures_since(200).unwrap();
        assert_eq!(f.kinds, ["backup", "clone", "commit", "restore"]);
        assert_eq!(
            f.failed,
            [(late, "backup".to_string()), (restore, "restore".to_string())]
        );
    }
}
