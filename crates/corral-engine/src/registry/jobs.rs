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
    })
}

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
        Ok(self.conn.last_insert_rowid())
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
