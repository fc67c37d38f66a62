//! `corral-qmp`: a small async client for the QEMU Machine Protocol.
//!
//! A [`Qmp`] handle owns one QMP connection over a unix socket. A background
//! reader task dispatches replies to the waiting callers by `id` (so several
//! commands may be in flight at once, from any number of tasks) and fans
//! asynchronous events out on a broadcast channel ([`Qmp::events`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_qmp::QmpError> {
//! use std::time::Duration;
//! let qmp = corral_qmp::Qmp::connect_retry("/run/vm/qmp.sock", Duration::from_secs(5)).await?;
//! let status = qmp.execute("query-status", None).await?;
//! println!("QEMU {}.{} is {}", qmp.version().major, qmp.version().minor, status["status"]);
//! # Ok(()) }
//! ```

mod client;
mod error;
mod job;
mod wire;

pub use client::Qmp;
pub use error::{ErrorClass, QmpError};
pub use job::JobInfo;

use std::fmt;

/// An asynchronous QMP event, e.g. `STOP`, `RESUME`, `JOB_STATUS_CHANGE`.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event name as QEMU spells it (`"STOP"`).
    pub name: String,
    /// The event's `"data"` member, or `Value::Null` when it has none.
    pub data: serde_json::Value,
    /// QEMU's timestamp as (seconds, microseconds) since the epoch.
    pub timestamp: Option<(i64, i64)>,
}

/// QEMU's version, from the QMP greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// Distribution package string, e.g. `"Debian 1:7.2+dfsg-7"` (may be empty).
    pub package: String,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.trim().is_empty() {
            write!(f, " ({})", self.package.trim())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_display() {
        let mut v = QemuVersion {
            major: 7,
            minor: 2,
            micro: 22,
            package: String::new(),
        };
        assert_eq!(v.to_string(), "7.2.22");
        v.package = " Debian 1:7.2 ".into();
        assert_eq!(v.to_string(), "7.2.22 (Debian 1:7.2)");
    }
}
