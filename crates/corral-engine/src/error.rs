//! Engine errors. Every message says what is wrong and, where there is one, how to fix it.

use std::path::PathBuf;

use corral_types::{NameError, RunState, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("config file {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid VM name: {0}")]
    Name(#[from] NameError),
    #[error("no VM named {0}; `corral vm list` shows the defined VMs")]
    NotFound(String),
    #[error("a VM named {0} already exists; pick another name, or change it with `corral vm edit {0}`")]
    Exists(String),
    #[error("VM {name} is busy: {operation} by pid {pid}")]
    Busy { name: String, operation: String, pid: u32 },
    #[error("VM {name} is {state}: {hint}")]
    WrongState {
        name: String,
        state: RunState,
        hint: String,
    },
    #[error("{what} {} does not exist; {hint}", path.display())]
    MissingFile { what: String, path: PathBuf, hint: String },
    #[error("QEMU is not installed: {binary} was not found{where_}; install it with `apt-get install qemu-system-x86 qemu-utils`, or set `binary` under [qemu] in the config file")]
    QemuMissing { binary: String, where_: String },
    #[error("VNC port {port} on 127.0.0.1 is in use by another program; set another display.vnc_port in the spec (`corral vm edit {name}`), or remove it to pick a free port automatically")]
    VncPortInUse { name: String, port: u16 },
    #[error("QEMU failed to start VM {name}: {message}")]
    StartFailed { name: String, message: String },
    #[error("QEMU monitor of VM {name}: {source}")]
    Qmp {
        name: String,
        #[source]
        source: corral_qmp::QmpError,
    },
    #[error("{operation} of VM {name} failed: {message}")]
    Operation {
        name: String,
        operation: String,
        message: String,
    },
    /// The request cannot be carried out as asked (no such snapshot, no overlay to commit,
    /// shrinking a disk, …); nothing was changed.
    #[error("{}", invalid_text(name, operation, message))]
    Invalid {
        name: String,
        operation: String,
        message: String,
    },
    /// Something else depends on what the request would change or remove (a base image
    /// with linked clones); nothing was changed.
    #[error("{operation} of VM {name} refused: {message}")]
    InUse {
        name: String,
        operation: String,
        message: String,
    },
    #[error("{what}: {message}")]
    Tool { what: String, message: String },
    #[error("registry database {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    /// A request that cannot be carried out as given (the message says why and what to do);
    /// nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// An edit made from an old read of the spec: someone changed it since.
    #[error("the spec of VM {name} changed since it was read (generation {expected}, now {current}); read it again and retry")]
    Stale { name: String, expected: i64, current: i64 },
    /// A backup id the store does not have.
    #[error("{operation}: {message}")]
    NoSuchBackup { operation: String, message: String },
    #[error("VM {vm} has no disk named {disk:?}; its disks: {known}")]
    NoSuchDisk { vm: String, disk: String, known: String },
    #[error("no schedule named {0:?}; `corral schedule list` shows the schedules ([[schedule]] in the config file)")]
    NoSuchSchedule(String),
    /// A run of the schedule is going (in this process, or in the corral with this pid).
    #[error("schedule {name} is already running{}; wait for that run to end (`corral schedule list` shows it)", pid.map(|p| format!(" (in corral pid {p})")).unwrap_or_default())]
    ScheduleBusy { name: String, pid: Option<u32> },
}

impl EngineError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.into();
        move |source| EngineError::Io { path, source }
    }

    pub fn qmp(name: &str) -> impl FnOnce(corral_qmp::QmpError) -> EngineError + '_ {
        move |source| EngineError::Qmp {
            name: name.to_string(),
            source,
        }
    }

    pub fn op(name: &str, operation: &str, message: impl Into<String>) -> EngineError {
        EngineError::Operation {
            name: name.to_string(),
            operation: operation.to_string(),
            message: message.into(),
        }
    }

    pub fn invalid(name: &str, operation: &str, message: impl Into<String>) -> EngineError {
        EngineError::Invalid {
            name: name.to_string(),
            operation: operation.to_string(),
            message: message.into(),
        }
    }

    pub fn in_use(name: &str, operation: &str, message: impl Into<String>) -> EngineError {
        EngineError::InUse {
            name: name.to_string(),
            operation: operation.to_string(),
            message: message.into(),
        }
    }

    /// A short machine-readable kind, for `--json` error output and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Config { .. } => "config",
            EngineError::Spec(_) | EngineError::Name(_) => "invalid",
            EngineError::NotFound(_) => "not-found",
            EngineError::Exists(_) => "exists",
            EngineError::Busy { .. } => "busy",
            EngineError::WrongState { .. } => "wrong-state",
            EngineError::MissingFile { .. } => "missing-file",
            EngineError::QemuMissing { .. } => "qemu-missing",
            EngineError::VncPortInUse { .. } => "port-in-use",
            EngineError::StartFailed { .. } => "start-failed",
            EngineError::Qmp { .. } => "qmp",
            EngineError::Operation { .. } => "operation",
            EngineError::Invalid { .. } => "invalid",
            EngineError::InUse { .. } => "in-use",
            EngineError::Tool { .. } => "tool",
            EngineError::Db { .. } => "db",
            EngineError::Io { .. } => "io",
            EngineError::Timeout { .. } => "timeout",
            EngineError::BadRequest(_) => "invalid",
            EngineError::NoSuchDisk { .. } => "not-found",
            EngineError::NoSuchSchedule(_) => "not-found",
            EngineError::ScheduleBusy { .. } => "busy",
            EngineError::Stale { .. } => "stale",
            EngineError::NoSuchBackup { .. } => "not-found",
        }
    }
}

/// `backup of VM web1: …`, or `backup: …` when no single VM is concerned (name `-`).
fn invalid_text(name: &str, operation: &str, message: &str) -> String {
    if name == "-" {
        format!("{operation}: {message}")
    } else {
        format!("{operation} of VM {name}: {message}")
    }
}
