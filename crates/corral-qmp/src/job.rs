//! Running QEMU background jobs (`snapshot-save`, `blockdev-create`,
//! `block-commit`, ...) to completion.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::client::Qmp;
use crate::error::QmpError;
use crate::Event;

/// How often `run_job` polls `query-jobs` for progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// One entry of `query-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobInfo {
    pub id: String,
    /// The job type, e.g. `"create"`, `"snapshot-save"`, `"commit"`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// e.g. `"running"`, `"ready"`, `"concluded"`.
    pub status: String,
    #[serde(rename = "current-progress")]
    pub current_progress: u64,
    #[serde(rename = "total-progress")]
    pub total_progress: u64,
    /// Set once a failed job has concluded.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the events told us about the job so far.
#[derive(Debug, Default)]
struct JobTracker {
    aborting: bool,
    cancelled: bool,
    /// Error text from a `BLOCK_JOB_COMPLETED`/`BLOCK_JOB_ERROR` event.
    event_error: Option<String>,
    /// The caller passed `"auto-finalize": false`.
    manual_finalize: bool,
}

/// What `run_job` should do after an event or a `query-jobs` look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Wait,
    /// The job is `ready`: it waits for `job-complete`.
    Complete,
    /// The job is `pending` with `auto-finalize: false`: send `job-finalize`.
    Finalize,
    /// The job has concluded (or is already gone).
    Done,
}

impl JobTracker {
    /// Feeds one event; says what to do next.
    fn observe(&mut self, job_id: &str, event: &Event) -> Step {
        let data = &event.data;
        match event.name.as_str() {
            "JOB_STATUS_CHANGE" if data["id"] == job_id => {
                let status = data["status"].as_str().unwrap_or_default();
                debug!(job_id, status, "job status changed");
                return self.on_status(status);
            }
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_ERROR" if data["device"] == job_id => {
                if let Some(err) = data["error"].as_str() {
                    self.event_error = Some(err.to_string());
                }
            }
            "BLOCK_JOB_CANCELLED" if data["device"] == job_id => self.cancelled = true,
            _ => {}
        }
        Step::Wait
    }

    fn on_status(&mut self, status: &str) -> Step {
        match status {
            "aborting" => {
                self.aborting = true;
                Step::Wait
            }
            "ready" => Step::Complete,
            "pending" if self.manual_finalize => Step::Finalize,
            "concluded" | "null" => Step::Done,
            _ => Step::Wait,
        }
    }

    fn failure(&self) -> Option<String> {
        if let Some(err) = &self.event_error {
            return Some(err.clone());
        }
        if self.cancelled {
            return Some("job was cancelled".into());
        }
        if self.aborting {
            return Some("job aborted".into());
        }
        None
    }
}

/// Puts `"job-id": job_id` into `args`, or checks that it is already there.
fn with_job_id(mut args: Value, job_id: &str) -> Result<Value, QmpError> {
    let Value::Object(obj) = &mut args else {
        return Err(QmpError::Protocol(format!(
            "job arguments must be a JSON object, got {args}"
        )));
    };
    match obj.get("job-id") {
        None => {
            obj.insert("job-id".into(), Value::String(job_id.to_string()));
        }
        Some(id) if id == job_id => {}
        Some(id) => {
            return Err(QmpError::Protocol(format!(
                "job arguments carry job-id {id}, but run_job was asked for {job_id:?}"
            )))
        }
    }
    Ok(args)
}

impl Qmp {
    /// `query-jobs`: every job QEMU currently knows about.
    pub async fn query_jobs(&self) -> Result<Vec<JobInfo>, QmpError> {
        self.execute_as("query-jobs", None).await
    }

    async fn find_job(&self, job_id: &str) -> Result<Option<JobInfo>, QmpError> {
        Ok(self.query_jobs().await?.into_iter().find(|j| j.id == job_id))
    }

    /// Runs a job-based command to the end.
    ///
    /// Subscribes to events, sends `cmd` with `args` (whose `"job-id"` must
    /// be `job_id`; it is added if missing), waits for the job's
    /// `JOB_STATUS_CHANGE` to `concluded` (or `null`), reads its error from
    /// `query-jobs`, then `job-dismiss`es it. With `progress`, `query-jobs`
    /// is polled about every 250 ms while the job runs and the callback gets
    /// `(current_progress, total_progress)`.
    ///
    /// "To completion" is meant literally: a job that reaches `ready`
    /// (mirror, active-layer `block-commit`) is sent `job-complete`, and one
    /// started with `"auto-finalize": false` is sent `job-finalize` when
    /// `pending`. Jobs that should stay `ready` must not be run with this.
    /// For block jobs that dismiss themselves by default, pass
    /// `"auto-dismiss": false` to get the error text from `query-jobs` (the
    /// `BLOCK_JOB_COMPLETED` error is used otherwise).
    pub async fn run_job(
        &self,
        cmd: &str,
        args: Value,
        job_id: &str,
        progress: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
    ) -> Result<(), QmpError> {
        let args = with_job_id(args, job_id)?;
        let mut tracker = JobTracker {
            manual_finalize: args.get("auto-finalize") == Some(&Value::Bool(false)),
            ..JobTracker::default()
        };
        let mut events = self.events();
        self.execute(cmd, Some(args)).await?;

        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => tracker.observe(job_id, &event),
                    Err(RecvError::Lagged(n)) => {
                        // Events were lost; ask QEMU where the job stands.
                        warn!(job_id, missed = n, "event receiver lagged during job");
                        match self.find_job(job_id).await? {
                            None => Step::Done,
                            Some(job) => tracker.on_status(&job.status),
                        }
                    }
                    Err(RecvError::Closed) => return Err(QmpError::Disconnected),
                },
                _ = ticker.tick(), if progress.is_some() => {
                    if let (Some(cb), Some(job)) = (progress, self.find_job(job_id).await?) {
                        cb(job.current_progress, job.total_progress);
                    }
                    Step::Wait
                },
                _ = self.closed() => return Err(QmpError::Disconnected),
            };
            let go_on = match step {
                Step::Wait => continue,
                Step::Done => break,
                Step::Complete => "job-complete",
                Step::Finalize => "job-finalize",
            };
            // If this fails the job has moved on by itself; its next status
            // change tells us where it went.
            if let Err(e) = self.execute(go_on, Some(json!({ "id": job_id }))).await {
                warn!(job_id, error = %e, "{go_on} failed");
            }
        }

        self.finish_job(job_id, &tracker, progress).await
    }

    /// After the job concluded: fetch its error, dismiss it, report.
    async fn finish_job(
        &self,
        job_id: &str,
        tracker: &JobTracker,
        progress: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
    ) -> Result<(), QmpError> {
        let mut failure = tracker.failure();
        match self.find_job(job_id).await? {
            Some(job) => {
                if let Some(cb) = progress {
                    cb(job.current_progress, job.total_progress);
                }
                if let Some(err) = job.error {
                    failure = Some(err);
                }
                if job.status == "concluded" {
                    let dismissed = self.execute("job-dismiss", Some(json!({ "id": job_id }))).await;
                    if let Err(e) = dismissed {
                        // The job's own failure is the more useful error.
                        if failure.is_none() {
                            return Err(e);
                        }
                        warn!(job_id, error = %e, "job-dismiss failed");
                    }
                } else {
                    warn!(job_id, status = %job.status, "job not concluded, left in place");
                }
            }
            None => debug!(job_id, "job already gone (auto-dismissed)"),
        }
        match failure {
            Some(message) => Err(QmpError::JobFailed {
                job_id: job_id.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: Value) -> Event {
        Event {
            name: name.into(),
            data,
            timestamp: None,
        }
    }

    #[test]
    fn job_id_added_or_checked() {
        let args = with_job_id(json!({"options": {}}), "j1").unwrap();
        assert_eq!(args["job-id"], "j1");
        let args = with_job_id(json!({"job-id": "j1"}), "j1").unwrap();
        assert_eq!(args["job-id"], "j1");
        assert!(matches!(
            with_job_id(json!({"job-id": "other"}), "j1"),
            Err(QmpError::Protocol(_))
        ));
        assert!(matches!(with_job_id(json!([1]), "j1"), Err(QmpError::Protocol(_))));
    }

    #[test]
    fn tracker_follows_only_its_job() {
        let mut t = JobTracker::default();
        let change = |id: &str, status: &str| ev("JOB_STATUS_CHANGE", json!({"id": id, "status": status}));
        assert_eq!(t.observe("j1", &change("j1", "created")), Step::Wait);
        assert_eq!(t.observe("j1", &change("j1", "running")), Step::Wait);
        assert_eq!(t.observe("j1", &change("j2", "concluded")), Step::Wait);
        assert_eq!(t.observe("j1", &change("j2", "ready")), Step::Wait);
        assert_eq!(t.observe("j1", &ev("STOP", Value::Null)), Step::Wait);
        assert_eq!(t.observe("j1", &change("j1", "ready")), Step::Complete);
        // Auto-finalized jobs pass through "pending" on their own.
        assert_eq!(t.observe("j1", &change("j1", "pending")), Step::Wait);
        assert_eq!(t.failure(), None);
        assert_eq!(t.observe("j1", &change("j1", "aborting")), Step::Wait);
        assert_eq!(t.failure().as_deref(), Some("job aborted"));
        let completed = json!({"device": "j1", "error": "No space"});
        let step = t.observe("j1", &ev("BLOCK_JOB_COMPLETED", completed));
        assert_eq!(step, Step::Wait);
        assert_eq!(t.failure().as_deref(), Some("No space"));
        assert_eq!(t.observe("j1", &change("j1", "concluded")), Step::Done);

        let mut t = JobTracker {
            manual_finalize: true,
            ..JobTracker::default()
        };
        assert_eq!(t.observe("j1", &change("j1", "pending")), Step::Finalize);
        assert_eq!(t.observe("j1", &change("j1", "null")), Step::Done);
        assert_eq!(t.failure(), None);
    }

    #[test]
    fn job_info_deserialises() {
        let v = json!([{"current-progress": 1, "status": "concluded", "total-progress": 1,
                        "type": "create", "id": "j1", "error": "boom"}]);
        let jobs: Vec<JobInfo> = serde_json::from_value(v).unwrap();
        assert_eq!(jobs[0].job_type, "create");
        assert_eq!(jobs[0].error.as_deref(), Some("boom"));
    }
}
