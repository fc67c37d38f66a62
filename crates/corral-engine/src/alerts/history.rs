//! The engine's side of alerts: the history for front ends (`Engine::alerts`), the rules of
//! the loaded config, outcomes recorded by the delivery tasks, and the backup facts the
//! built-in rules read (backup jobs from the registry, the newest backup per VM from the
//! store's manifests through `metrics::BackupFacts`, which reads each manifest once).

use corral_types::{AlertInfo, JobState, NotificationOutcome};

use super::eval::{BackupFacts, BackupJob, VmBackups};
use super::rules::{compile_all, AlertRule};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::metrics::BackupFacts as Manifests;

/// How many jobs the backup rules look back on (the registry keeps 1000).
const JOBS_SEEN: usize = 1000;

impl Engine {
    /// The firing alerts (newest first), or with `all` the history too (newest first, at most
    /// `limit`): what `corral alerts`, the API and the web page show.
    pub fn alerts(&self, all: bool, limit: usize) -> Result<Vec<AlertInfo>, EngineError> {
        if all {
            return self.reg().alerts_history(limit);
        }
        let mut open = self.reg().alerts_open()?;
        open.reverse();
        open.truncate(limit);
        Ok(open)
    }

    /// The `[[alert]]` rules of the loaded config.
    pub fn alert_rules(&self) -> Vec<AlertRule> {
        compile_all(&self.config().alert, &self.config().notify)
    }

    /// Adds a notification's outcome to its alert in the history.
    pub fn alert_record_notification(&self, alert_id: i64, outcome: &NotificationOutcome) {
        if let Err(e) = self.reg().alert_add_notification(alert_id, outcome) {
            tracing::warn!(alert = alert_id, "cannot record a notification's outcome: {e}");
        }
    }
}

/// What the built-in backup rules need, or `None` when the jobs cannot be read.
pub(super) fn backup_facts(engine: &Engine, manifests: &Manifests) -> Option<BackupFacts> {
    let jobs = match engine.jobs(None, JOBS_SEEN) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("alerts: cannot read the jobs: {e}");
            return None;
        }
    };
    let mut facts = BackupFacts::default();
    // Newest first: the first finished backup job of each VM is its last.
    for j in jobs
        .iter()
        .filter(|j| j.kind == "backup" && j.state != JobState::Running)
    {
        let entry = facts.vms.entry(j.vm.clone()).or_insert_with(VmBackups::default);
        if entry.last_job.is_none() {
            entry.last_job = Some(BackupJob {
                id: j.id,
                failed: j.state != JobState::Succeeded,
                finished_ms: j.finished_ms.unwrap_or(j.started_ms),
                message: j.message.clone(),
            });
        }
    }
    if engine.config().alerts.backup_max_age.is_some() {
        match manifests.last_per_vm(engine) {
            Ok(list) => {
                for b in list {
                    // The backup's point in time is its start.
                    let start_ms = ((b.end_unix_seconds - b.duration_seconds) * 1000.0).round() as i64;
                    facts.vms.entry(b.vm).or_default().newest_backup_ms = Some(start_ms);
                }
            }
            Err(e) => tracing::warn!("alerts: cannot list the backups: {e}"),
        }
    }
    Some(facts)
}
