//! Resource use of VMs and of the host (`corral metrics`, the daemon's sampler, munin and
//! Prometheus all read it from here).
//!
//! A sample holds cumulative counters only; [`with_rates`] turns two samples into rates. A
//! pass reads /proc for every running QEMU and asks each one's status monitor (concurrently)
//! for vCPU threads and block statistics; VMs without QEMU cost no more than `list` does.

mod facts;
pub mod history;
mod live;
pub(crate) mod procfs;
mod rates;
mod sampler;
mod summary;

use corral_types::{MetricsReport, VmName};

pub use facts::{BackupFacts, JobFailureCounter, LastBackup};
pub use history::{History, HistoryError};
pub use rates::with_rates;
pub use sampler::{PassCost, Sampler};

use crate::engine::state::observe_files;
use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// The data dir's and the backup store's file systems.
    pub fn metrics_filesystems(&self) -> Vec<corral_types::FsUsage> {
        let store = self.store_path();
        [("data", self.config().data_dir.as_path()), ("backup", store.as_path())]
            .into_iter()
            .filter_map(|(role, p)| procfs::fs_usage(role, p))
            .collect()
    }

    /// One sample of the host and of the named VMs (every VM when `names` is empty), in name
    /// order. An unknown name is an error; a VM that cannot be read (its QEMU went away) is
    /// reported with what could be read.
    pub async fn metrics_sample(&self, names: &[String]) -> Result<MetricsReport, EngineError> {
        let records = self.reg().list_shared()?;
        for n in names {
            let vm = VmName::new(n)?;
            if !records.iter().any(|r| r.spec.name == vm) {
                self.reg().require(vm.as_str())?;
            }
        }
        let wanted =
            |r: &&crate::registry::VmRecord| names.is_empty() || names.iter().any(|n| n == r.spec.name.as_str());
        let mut live = tokio::task::JoinSet::new();
        let mut vms = Vec::with_capacity(records.len());
        for r in records.iter().filter(wanted) {
            let paths = self.paths(&r.spec.name);
            match observe_files(&r.spec, &paths) {
                Ok(o) => vms.push(live::idle(&r.spec, o.state)),
                Err(pid) => {
                    let spec = r.spec.clone();
                    live.spawn(async move { live::sample(&spec, &paths, pid).await });
                }
            }
        }
        let host = procfs::host(self.metrics_filesystems());
        while let Some(done) = live.join_next().await {
            if let Ok(vm) = done {
                vms.push(vm);
            }
        }
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(MetricsReport {
            taken_ms: crate::engine::jobs::now_ms(),
            interval_ms: None,
            host,
            vms,
        })
    }
}
