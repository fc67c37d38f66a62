//! Runtime state as reported by `corral vm list/show/status --json` (and later the REST API).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of a VM, always derived afresh from the pidfile, the process and QMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// No QEMU process, no saved state.
    Stopped,
    /// QEMU runs and the vCPUs run.
    Running,
    /// QEMU runs with the vCPUs stopped (paused by a user, or mid-operation).
    Paused,
    /// No QEMU process; a saved memory state waits for the next `start`.
    Saved,
    /// The QEMU process died without a clean shutdown (killed, crashed, OOM).
    Crashed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Stopped => "stopped",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Saved => "saved",
            RunState::Crashed => "crashed",
        }
    }
    /// Whether a QEMU process exists for the VM.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One VM as `list --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmStatus {
    pub name: String,
    pub uuid: String,
    pub state: RunState,
    pub cpus: u32,
    /// Configured memory in bytes.
    pub memory: u64,
    pub tags: Vec<String>,
    pub autostart: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// QEMU's own run status (`running`, `paused`, `inmigrate`, …) when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_status: Option<String>,
    /// `127.0.0.1:5900` when a VNC display is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vnc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// For a crashed VM: the last lines of its QEMU and serial logs.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub last_log: Vec<String>,
}

/// How a `stop` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopOutcome {
    pub name: String,
    /// The guest shut itself down (QEMU `SHUTDOWN` event with `guest: true`).
    pub guest_initiated: bool,
    /// corral ended QEMU because the guest did not power off in time, or `--force` was given.
    pub forced: bool,
    pub millis: u64,
}
