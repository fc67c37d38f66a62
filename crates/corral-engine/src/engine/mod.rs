//! The engine: one object shared by every front end. Operations take the VM lock, read the
//! definition from the registry, observe the real runtime state, act, and clean up after
//! themselves on every error path.

pub mod agent;
pub mod auth;
pub mod backup;
mod clone;
mod console;
pub mod define;
pub mod diskmgmt;
pub mod fleece;
mod host;
mod hotplug;
mod idle;
mod img;
pub mod jobs;
pub mod layers;
mod lifecycle;
mod pipeline;
pub mod restore;
pub mod save;
pub mod snapshot;
pub(crate) mod state;

use std::sync::{Mutex, MutexGuard};

use corral_types::{VmName, VmSpec};

pub use define::{CreateOptions, DeleteReport};
pub use diskmgmt::{CdromReport, DiskAddOptions, DiskRemoval, DiskReport};
pub use host::HostReport;
pub use lifecycle::StartInfo;

use crate::config::HostConfig;
use crate::error::EngineError;
use crate::lock::{lock_vm, VmLock};
use crate::paths::{db_path, ensure_dir, lock_dir, VmPaths};
use crate::registry::{Registry, VmRecord};

pub struct Engine {
    cfg: HostConfig,
    registry: Mutex<Registry>,
    /// Job updates for front ends in this process (see `jobs.rs`).
    job_tx: tokio::sync::broadcast::Sender<corral_types::JobInfo>,
    /// Scheduled jobs: the current list, runs going in this process, run updates, and the
    /// scheduler's wake-up when the list changes (see `crate::schedule`).
    pub(crate) sched: crate::schedule::EngineSchedules,
    /// VMs with no QEMU as last seen, for a long-lived process (`watch_idle_vms`).
    idle: Mutex<Option<idle::IdleWatch>>,
}

impl Engine {
    /// Opens (creating if needed) the data and run dirs and the registry.
    pub fn open(cfg: HostConfig) -> Result<Engine, EngineError> {
        ensure_dir(&cfg.data_dir, 0o700).map_err(EngineError::io(&cfg.data_dir))?;
        ensure_dir(&cfg.run_dir, 0o700).map_err(EngineError::io(&cfg.run_dir))?;
        let registry = Registry::open(&db_path(&cfg))?;
        Ok(Engine {
            sched: crate::schedule::EngineSchedules::new(cfg.schedule.clone()),
            cfg,
            registry: Mutex::new(registry),
            job_tx: tokio::sync::broadcast::channel(256).0,
            idle: Mutex::new(None),
        })
    }

    /// For a long-lived process (`corral serve`) that lists VMs again and again: from now on
    /// `list` remembers which VMs have no QEMU and looks at them again only when inotify says
    /// their pidfile or saved-state directory changed (see `idle.rs`), so what it answers is
    /// as current as before, at a fraction of the syscalls. Without inotify nothing changes.
    pub fn watch_idle_vms(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.is_none() {
            *idle = idle::IdleWatch::new(&self.cfg);
        }
    }

    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    pub(crate) fn reg(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn paths(&self, name: &VmName) -> VmPaths {
        VmPaths::new(&self.cfg, name)
    }

    fn lock(&self, name: &VmName, operation: &str) -> Result<VmLock, EngineError> {
        lock_vm(&lock_dir(&self.cfg), name.as_str(), operation)
    }

    /// Takes a VM's lock and then reads its definition, so that nothing the operation acts on
    /// was read before the lock (another operation may have changed the spec meanwhile).
    fn lock_and_get(&self, name: &str, operation: &str) -> Result<(VmLock, VmRecord), EngineError> {
        let vm = VmName::new(name)?;
        self.reg().require(vm.as_str())?; // an unknown VM gets no lock file
        let lock = self.lock(&vm, operation)?;
        let rec = self.reg().require(vm.as_str())?;
        Ok((lock, rec))
    }

    /// The stored definition of a VM.
    pub fn get(&self, name: &str) -> Result<VmRecord, EngineError> {
        let name = VmName::new(name)?;
        self.reg().require(name.as_str())
    }

    pub fn get_spec(&self, name: &str) -> Result<VmSpec, EngineError> {
        Ok(self.get(name)?.spec)
    }

    /// All stored definitions, by name.
    pub fn records(&self) -> Result<Vec<VmRecord>, EngineError> {
        self.reg().list()
    }
}

/// The daemon runs engine operations on a multi-threaded runtime: their futures must be
/// `Send`. This fails to compile if one stops being so.
#[allow(dead_code)]
fn operations_are_send(e: &'static Engine) {
    fn send<T: Send>(_: T) {}
    send(e.list());
    send(e.status("x"));
    send(e.start("x"));
    send(e.stop("x", None, false));
    send(e.save("x"));
    send(e.pause("x"));
    send(e.resume("x"));
    send(e.kill("x"));
    send(e.backup_run("x", false, None));
}

#[allow(dead_code)]
fn scheduler_is_send(e: std::sync::Arc<Engine>) {
    fn send<T: Send>(_: T) {}
    send(crate::schedule::Scheduler::new(e, crate::schedule::SystemClock).run(std::future::pending::<()>()));
}
