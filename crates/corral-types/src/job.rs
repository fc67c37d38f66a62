//! Long operations (full clone, commit, consolidate, snapshots with memory) run as jobs. Their
//! state is kept in the registry so that any process (the CLI, `corral job list`, the web
//! server) can read it, and streamed to the caller while it runs.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    /// The process that ran it died before it finished (derived: the row says running, the
    /// pid is gone).
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        }
    }
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job, as `corral job list --json` prints it and as progress lines stream it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    pub id: i64,
    pub vm: String,
    /// `clone`, `commit`, `consolidate`, `snapshot`, `revert`, …
    pub kind: String,
    /// What it works on, for people: `disk0`, `web1 → web2`, a snapshot name.
    pub target: String,
    pub state: JobState,
    /// Progress: `done` of `total` units (bytes when QEMU reports bytes; 0/0 when unknown).
    pub done: u64,
    pub total: u64,
    /// Unix milliseconds.
    pub started_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// The error of a failed job, or a one-line result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The process running it.
    pub pid: u32,
    /// Byte counts of a backup or restore (streamed while it runs; not kept in `job list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<TransferBytes>,
}

/// What a backup or restore has moved so far, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferBytes {
    /// Read from the disk (backup) or from the store (restore), uncompressed.
    pub read: u64,
    /// Of those, not in the store before: stored now.
    pub new: u64,
    /// Of those, already in the store (another backup or VM had them).
    pub reused: u64,
    /// What the new bytes took in the store, compressed.
    pub stored: u64,
}

impl JobInfo {
    /// Progress as a fraction in 0..=1, when known.
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).clamp(0.0, 1.0))
    }
}
