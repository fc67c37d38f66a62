//! One look at a running VM: QEMU's status, vCPU threads, block and balloon statistics over
//! the status monitor (the one `list` uses, so no operation's monitor is ever waited on), the
//! process's and threads' CPU time and memory from /proc, and NIC counters from the guest
//! agent when the VM has one (user-mode networking has no host-side counters).

use std::time::Duration;

use corral_qmp::Qmp;
use corral_types::{DiskIo, NicIo, RunState, VcpuTime, VmCpu, VmMemory, VmMetrics, VmSpec};
use serde::Deserialize;

use super::procfs;
use crate::engine::agent::GuestAgent;
use crate::engine::state::live_state;
use crate::paths::VmPaths;
use crate::process::uptime_seconds;

/// How long one VM's monitor may take to answer every query of a pass.
const QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest agent may take; a guest without a running agent costs at most this.
const AGENT_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Deserialize)]
struct CpuFast {
    #[serde(rename = "cpu-index")]
    index: u32,
    #[serde(rename = "thread-id")]
    thread_id: u32,
}

#[derive(Deserialize)]
struct BlockStats {
    #[serde(rename = "node-name", default)]
    node_name: Option<String>,
    #[serde(default)]
    device: String,
    stats: BlockCounters,
}

#[derive(Deserialize)]
struct BlockCounters {
    rd_bytes: u64,
    wr_bytes: u64,
    rd_operations: u64,
    wr_operations: u64,
}

#[derive(Default)]
struct FromQemu {
    status: Option<String>,
    vcpus: Vec<CpuFast>,
    blocks: Vec<BlockStats>,
    balloon: Option<u64>,
}

async fn ask_qemu(paths: &VmPaths) -> FromQemu {
    let work = async {
        let mut out = FromQemu::default();
        let Ok(qmp) = Qmp::connect(paths.qmp_status()).await else {
            return out;
        };
        out.status = qmp
            .execute("query-status", None)
            .await
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_string));
        out.vcpus = qmp.execute_as("query-cpus-fast", None).await.unwrap_or_default();
        out.blocks = qmp.execute_as("query-blockstats", None).await.unwrap_or_default();
        // DeviceNotActive without a balloon device: no figure.
        out.balloon = qmp
            .execute("query-balloon", None)
            .await
            .ok()
            .and_then(|v| v.get("actual")?.as_u64());
        out
    };
    tokio::time::timeout(QMP_TIMEOUT, work).await.unwrap_or_default()
}

/// The disk a block device belongs to: corral names nodes `drive-<disk>`.
fn disk_name(b: &BlockStats) -> Option<String> {
    match b.node_name.as_deref().and_then(|n| n.strip_prefix("drive-")) {
        Some(d) => Some(d.to_string()),
        None if !b.device.is_empty() => Some(b.device.clone()),
        None => None,
    }
}

async fn nic_counters(spec: &VmSpec, paths: &VmPaths) -> Vec<NicIo> {
    if !spec.guest_agent || spec.network.mode == corral_types::NetworkMode::None {
        return vec![];
    }
    let Some(mac) = spec.network.mac.map(|m| m.to_string().to_ascii_lowercase()) else {
        return vec![];
    };
    let stats = async {
        let mut agent = GuestAgent::connect(&paths.qga_sock(), AGENT_TIMEOUT).await.ok()?;
        agent.interface_stats(AGENT_TIMEOUT).await.ok()
    };
    let Ok(Some(list)) = tokio::time::timeout(AGENT_TIMEOUT * 2, stats).await else {
        return vec![];
    };
    list.into_iter()
        .filter(|i| i.mac == mac)
        .take(1)
        .map(|i| NicIo {
            nic: "nic0".into(),
            source: "guest-agent".into(),
            rx_bytes_total: i.rx_bytes,
            tx_bytes_total: i.tx_bytes,
            rx_packets_total: i.rx_packets,
            tx_packets_total: i.tx_packets,
            rx_bytes_per_second: None,
            tx_bytes_per_second: None,
        })
        .collect()
}

/// Samples a VM whose QEMU (`pid`) is alive. Counters only; rates come from `rates`.
pub(crate) async fn sample(spec: &VmSpec, paths: &VmPaths, pid: u32) -> VmMetrics {
    let (q, nics) = tokio::join!(ask_qemu(paths), nic_counters(spec, paths));
    let vcpus = q
        .vcpus
        .iter()
        .filter_map(|c| {
            Some(VcpuTime {
                index: c.index,
                thread_id: c.thread_id,
                seconds_total: procfs::thread_cpu_seconds(pid, c.thread_id)?,
                percent: None,
            })
        })
        .collect();
    let cpu = procfs::process_cpu_seconds(pid).map(|seconds_total| VmCpu {
        seconds_total,
        percent: None,
        percent_of_vcpus: None,
        vcpus,
    });
    let memory = procfs::process_rss_bytes(pid).map(|rss| VmMemory {
        rss_bytes: rss,
        rss_percent: if spec.memory.0 > 0 {
            100.0 * rss as f64 / spec.memory.0 as f64
        } else {
            0.0
        },
        balloon_actual_bytes: q.balloon,
    });
    let mut disks: Vec<DiskIo> = q
        .blocks
        .iter()
        .filter_map(|b| {
            Some(DiskIo {
                disk: disk_name(b)?,
                read_bytes_total: b.stats.rd_bytes,
                write_bytes_total: b.stats.wr_bytes,
                read_ops_total: b.stats.rd_operations,
                write_ops_total: b.stats.wr_operations,
                read_bytes_per_second: None,
                write_bytes_per_second: None,
                read_ops_per_second: None,
                write_ops_per_second: None,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.disk.cmp(&b.disk));
    let state = live_state(q.status.as_deref(), paths);
    VmMetrics {
        name: spec.name.to_string(),
        state,
        tags: spec.tags.clone(),
        vcpus: spec.cpus,
        memory_bytes: spec.memory.0,
        pid: Some(pid),
        uptime_seconds: uptime_seconds(pid),
        cpu,
        memory,
        disks,
        nics,
    }
}

/// A VM with no QEMU: its state and configured figures only.
pub(crate) fn idle(spec: &VmSpec, state: RunState) -> VmMetrics {
    VmMetrics {
        tags: spec.tags.clone(),
        ..VmMetrics::configured(spec.name.as_str(), state, spec.cpus, spec.memory.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blockstats_map_to_disks_by_node_name() {
        let v = json!([
            {"device": "", "node-name": "drive-disk0", "stats": {"rd_bytes": 5, "wr_bytes": 6, "rd_operations": 1, "wr_operations": 2}},
            {"device": "ide1-cd0", "stats": {"rd_bytes": 0, "wr_bytes": 0, "rd_operations": 0, "wr_operations": 0}},
            {"device": "", "node-name": "#block123", "stats": {"rd_bytes": 0, "wr_bytes": 0, "rd_operations": 0, "wr_operations": 0}}
        ]);
        let b: Vec<BlockStats> = serde_json::from_value(v).unwrap();
        let names: Vec<Option<String>> = b.iter().map(disk_name).collect();
        assert_eq!(names, [Some("disk0".into()), Some("ide1-cd0".into()), None]);
    }
}
