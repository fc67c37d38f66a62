//! `corral metrics --summary`: what the VMs are given against what the host has.

use std::collections::HashSet;

use corral_types::{MetricsSummary, RunState};

use crate::engine::layers::disk_path;
use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// vCPUs and memory defined (all VMs) and committed (running ones), resident memory, and
    /// the disks' virtual sizes against what their images take on the host (each file once,
    /// so a base image shared by linked clones counts once). Reads every disk's chain with
    /// qemu-img (`-U`: running VMs' images too).
    pub async fn metrics_summary(&self) -> Result<MetricsSummary, EngineError> {
        let report = self.metrics_sample(&[]).await?;
        let mut s = MetricsSummary {
            host_cpus: report.host.cpus,
            host_memory_bytes: report.host.memory_total_bytes,
            vms: report.vms.len() as u32,
            vms_running: 0,
            vcpus_defined: 0,
            vcpus_running: 0,
            memory_defined_bytes: 0,
            memory_running_bytes: 0,
            memory_rss_bytes: 0,
            disk_provisioned_bytes: 0,
            disk_used_bytes: 0,
            filesystems: report.host.filesystems.clone(),
        };
        for vm in &report.vms {
            s.vcpus_defined += vm.vcpus;
            s.memory_defined_bytes += vm.memory_bytes;
            if matches!(vm.state, RunState::Running | RunState::Paused) {
                s.vms_running += 1;
                s.vcpus_running += vm.vcpus;
                s.memory_running_bytes += vm.memory_bytes;
                s.memory_rss_bytes += vm.memory.as_ref().map_or(0, |m| m.rss_bytes);
            }
        }
        let mut seen = HashSet::new();
        for r in self.records()? {
            let paths = self.paths(&r.spec.name);
            for d in &r.spec.disks {
                let path = disk_path(d, &paths);
                let Ok(chain) = self.img_chain(&path) else {
                    continue; // a missing image is `corral vm show`'s business
                };
                if let Some(top) = chain.first() {
                    s.disk_provisioned_bytes += top.virtual_size;
                }
                for layer in chain {
                    let key = std::fs::canonicalize(&layer.filename).unwrap_or(layer.filename);
                    if seen.insert(key) {
                        s.disk_used_bytes += layer.actual_size;
                    }
                }
            }
        }
        Ok(s)
    }
}
