//! The corral engine: everything the CLI (and later the daemon) does to VMs.
//!
//! - [`config`]: host settings (`/etc/corral/corral.toml`).
//! - [`registry`]: the SQLite VM registry (definitions only).
//! - [`qemu_args`]: the pure function that turns a spec into a QEMU command line.
//! - [`process`]: detached spawning, pid checks, waiting for exit.
//! - [`lock`]: per-VM flock so that mutations never race.
//! - [`engine`]: the operations (define, start, stop, save, …) built from the above.
//! - [`alerts`]: threshold and built-in alerts, their history and notifiers (docs/alerts.md).

pub mod alerts;
pub mod config;
pub mod engine;
pub mod error;
pub mod lock;
pub mod metrics;
pub mod paths;
pub mod process;
pub mod qemu_args;
pub mod registry;
pub mod schedule;

pub use config::HostConfig;
pub use engine::{CreateOptions, DeleteReport, Engine, HostReport, StartInfo};
pub use error::EngineError;
pub use paths::VmPaths;
