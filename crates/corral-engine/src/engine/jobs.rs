//! The job model. A long operation (full clone, commit, consolidate, snapshot with memory)
//! runs as a job: a row in the registry's `jobs` table that any process can read (`corral job
//! list`, later the web server), and a stream of [`JobInfo`] updates on the engine's broadcast
//! channel for the caller in this process (the CLI's progress bar, the daemon's event stream).
//!
//! Progress reaches the channel at most every 100 ms and the database at most once a second,
//! so a job that reports often costs nothing noticeable. A job row whose process died while
//! it said `running` is shown as `interrupted`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_types::{JobInfo, JobState};

use super::Engine;
use crate::error::EngineError;

const STREAM_EVERY: Duration = Duration::from_millis(100);
const STORE_EVERY: Duration = Duration::from_secs(1);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A running job. Finish it with [`Job::finish`]; dropped unfinished, it is recorded as failed.
pub struct Job<'a> {
    engine: &'a Engine,
    info: Mutex<JobInfo>,
    last_stream: Mutex<Option<Instant>>,
    last_store: Mutex<Option<Instant>>,
    finished: Mutex<bool>,
}

impl Job<'_> {
    pub fn id(&self) -> i64 {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).id
    }

    /// Reports progress: `done` of `total` units.
    pub fn progress(&self, done: u64, total: u64) {
        self.progress_with(done, total, None)
    }

    /// Reports progress with the byte counts of a backup or restore.
    pub fn progress_bytes(&self, done: u64, total: u64, bytes: corral_types::TransferBytes) {
        self.progress_with(done, total, Some(bytes))
    }

    fn progress_with(&self, done: u64, total: u64, bytes: Option<corral_types::TransferBytes>) {
        let info = {
            let mut i = self.info.lock().unwrap_or_else(|p| p.into_inner());
            i.done = done;
            i.total = total;
            if bytes.is_some() {
                i.bytes = bytes;
            }
            i.clone()
        };
        let now = Instant::now();
        let due = |slot: &Mutex<Option<Instant>>, every: Duration| {
            let mut last = slot.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| now.duration_since(t) >= every) || (total > 0 && done >= total);
            if due {
                *last = Some(now);
            }
            due
        };
        if due(&self.last_stream, STREAM_EVERY) {
            let _ = self.engine.job_tx.send(info.clone());
        }
        if due(&self.last_store, STORE_EVERY) {
            if let Err(e) = self.engine.reg().job_progress(info.id, done, total) {
                tracing::warn!(job = info.id, "cannot store job progress: {e}");
            }
        }
    }

    /// Records the outcome; `summary` is the one-line result of a job that worked.
    pub fn finish<T>(&self, result: &Result<T, EngineError>, summary: Option<String>) {
        let mut done = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return;
        }
        *done = true;
        let info = {
            let mut i = self.info.lock().unwrap_or_else(|p| p.into_inner());
            i.finished_ms = Some(now_ms());
            match result {
                Ok(_) => {
                    i.state = JobState::Succeeded;
                    if i.total > 0 {
                        i.done = i.total;
                    }
                    i.message = summary;
                }
                Err(e) => {
                    i.state = JobState::Failed;
                    i.message = Some(e.to_string());
                }
            }
            i.clone()
        };
        if let Err(e) = self.engine.reg().job_finish(&info) {
            tracing::warn!(job = info.id, "cannot store job result: {e}");
        }
        let _ = self.engine.job_tx.send(info);
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        let cancelled: Result<(), EngineError> = Err(EngineError::op(
            &self.info.lock().unwrap_or_else(|p| p.into_inner()).vm.clone(),
            "job",
            "ended without a result",
        ));
        self.finish(&cancelled, None);
    }
}

/// Whether any process has this pid (a job or run recorded by a corral that may have died).
pub(crate) fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn derive(mut j: JobInfo) -> JobInfo {
    if j.state == JobState::Running && j.pid != std::process::id() && !pid_alive(j.pid) {
        j.state = JobState::Interrupted;
    }
    j
}

impl Engine {
    /// Starts a job record for `vm`. The caller holds the VM lock.
    // No caller yet on this branch (the disk jobs that use it land separately); drop this
    // allow when they do.
    pub(crate) fn job_begin(&self, vm: &str, kind: &str, target: &str) -> Result<Job<'_>, EngineError> {
        let started_ms = now_ms();
        let pid = std::process::id();
        let id = self.reg().job_insert(vm, kind, target, pid, started_ms)?;
        let info = JobInfo {
            id,
            vm: vm.to_string(),
            kind: kind.to_string(),
            target: target.to_string(),
            state: JobState::Running,
            done: 0,
            total: 0,
            started_ms,
            finished_ms: None,
            message: None,
            pid,
            bytes: None,
        };
        let _ = self.job_tx.send(info.clone());
        Ok(Job {
            engine: self,
            info: Mutex::new(info),
            last_stream: Mutex::new(None),
            last_store: Mutex::new(None),
            finished: Mutex::new(false),
        })
    }

    /// Updates of every job this engine runs, as they happen.
    pub fn job_events(&self) -> tokio::sync::broadcast::Receiver<JobInfo> {
        self.job_tx.subscribe()
    }

    /// Recent jobs, newest first.
    pub fn jobs(&self, vm: Option<&str>, limit: usize) -> Result<Vec<JobInfo>, EngineError> {
        Ok(self.reg().jobs(vm, limit)?.into_iter().map(derive).collect())
    }

    pub fn job(&self, id: i64) -> Result<JobInfo, EngineError> {
        self.reg().job(id)?.map(derive).ok_or_else(|| {
            EngineError::invalid("-", "job", format!("no job with id {id}; `corral job list` shows them"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_job_of_a_dead_process_reads_as_interrupted() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let job = |pid: u32, state: JobState| JobInfo {
            id: 1,
            vm: "v".into(),
            kind: "commit".into(),
            target: "disk0".into(),
            state,
            done: 0,
            total: 0,
            started_ms: 0,
            finished_ms: None,
            message: None,
            pid,
            bytes: None,
        };
        assert_eq!(derive(job(dead, JobState::Running)).state, JobState::Interrupted);
        assert_eq!(
            derive(job(std::process::id(), JobState::Running)).state,
            JobState::Running
        );
        assert_eq!(derive(job(dead, JobState::Succeeded)).state, JobState::Succeeded);
    }
}
