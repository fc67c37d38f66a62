//! Resource use of VMs and of the host: what `corral metrics --json` prints, what the daemon
//! keeps as history, and the metric names alert rules refer to.
//!
//! Counters (`*_total`, `*_seconds`) are cumulative since the QEMU process started (per VM)
//! or since boot (host). Rates (`*_percent`, `*_per_second`) need two samples: they are
//! `None` in a single sample and filled in when a report covers an interval.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::RunState;

/// One look at the host and its VMs, or (with `interval_ms`) the change between two looks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsReport {
    /// Unix milliseconds of the (last) sample.
    pub taken_ms: i64,
    /// The time between the two samples that rates were computed from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    pub host: HostMetrics,
    pub vms: Vec<VmMetrics>,
}

/// The host's own CPU, memory, load and the space left where corral keeps data and backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostMetrics {
    /// Logical CPUs.
    pub cpus: u32,
    /// CPU time of all CPUs spent not idle (user, nice, system, irq, softirq, steal), seconds.
    pub cpu_busy_seconds_total: f64,
    /// Idle and iowait time of all CPUs, seconds.
    pub cpu_idle_seconds_total: f64,
    /// Busy share of all CPUs over the interval (100 = every CPU busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    pub memory_total_bytes: u64,
    /// `MemAvailable`: what could be given to new work without swapping.
    pub memory_available_bytes: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// The data dir and the backup store, each with its file system's size and free space.
    pub filesystems: Vec<FsUsage>,
}

/// The space of the file system a corral directory lives on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FsUsage {
    /// `data` or `backup`.
    pub role: String,
    pub path: String,
    pub size_bytes: u64,
    /// Free for unprivileged writers (`f_bavail`).
    pub available_bytes: u64,
}

impl FsUsage {
    pub fn used_percent(&self) -> f64 {
        if self.size_bytes == 0 {
            return 0.0;
        }
        100.0 * (self.size_bytes.saturating_sub(self.available_bytes)) as f64 / self.size_bytes as f64
    }
}

/// One VM's resource use. Only `name`, `state` and the configured figures are there for a VM
/// with no QEMU process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmMetrics {
    pub name: String,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Configured vCPUs.
    pub vcpus: u32,
    /// Configured memory, bytes.
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<VmCpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<VmMemory>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskIo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicIo>,
}

impl VmMetrics {
    /// A VM as its definition gives it: state and configured figures, nothing sampled.
    pub fn configured(name: impl Into<String>, state: RunState, vcpus: u32, memory_bytes: u64) -> VmMetrics {
        VmMetrics {
            name: name.into(),
            state,
            tags: vec![],
            vcpus,
            memory_bytes,
            pid: None,
            uptime_seconds: None,
            cpu: None,
            memory: None,
            disks: vec![],
            nics: vec![],
        }
    }
}

impl VmCpu {
    /// CPU use given as a share of `vcpus` vCPUs (no per-thread figures).
    pub fn from_percent(seconds_total: f64, percent_of_vcpus: f64, vcpus: u32) -> VmCpu {
        VmCpu {
            seconds_total,
            percent: Some(percent_of_vcpus * vcpus as f64),
            percent_of_vcpus: Some(percent_of_vcpus),
            vcpus: vec![],
        }
    }
}

/// CPU time of the QEMU process (every thread: vCPUs, I/O, emulation) and of each vCPU thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmCpu {
    /// User + system time of the whole process, seconds.
    pub seconds_total: f64,
    /// Of one host CPU: a VM keeping two host CPUs busy shows 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// `percent` divided by the configured vCPUs: 100 means every vCPU is busy. Alert rules on
    /// `cpu` use this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_of_vcpus: Option<f64>,
    pub vcpus: Vec<VcpuTime>,
}

/// One vCPU thread (`query-cpus-fast`'s thread id, read from /proc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VcpuTime {
    pub index: u32,
    pub thread_id: u32,
    pub seconds_total: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// Memory of the QEMU process and, when the VM has a balloon device, the guest's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmMemory {
    /// Resident set of the QEMU process, bytes.
    pub rss_bytes: u64,
    /// RSS as a share of the configured memory. Alert rules on `memory` use this.
    pub rss_percent: f64,
    /// The balloon's current size (memory the guest has), when a balloon device is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon_actual_bytes: Option<u64>,
}

/// Block I/O of one disk, as QEMU counts it (`query-blockstats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskIo {
    /// The disk's name in the spec (`disk0`, `data`, …).
    pub disk: String,
    pub read_bytes_total: u64,
    pub write_bytes_total: u64,
    pub read_ops_total: u64,
    pub write_ops_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ops_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_ops_per_second: Option<f64>,
}

/// Traffic of one network interface, seen from the guest (rx = received by the guest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NicIo {
    /// `nic0`, … in the VM's order.
    pub nic: String,
    /// Where the counters come from: `tap` (the host's tap device) or `guest-agent`.
    pub source: String,
    pub rx_bytes_total: u64,
    pub tx_bytes_total: u64,
    pub rx_packets_total: u64,
    pub tx_packets_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes_per_second: Option<f64>,
}

/// `corral metrics --summary`: what VMs are given against what the host has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsSummary {
    pub host_cpus: u32,
    pub host_memory_bytes: u64,
    pub vms: u32,
    pub vms_running: u32,
    /// vCPUs of every VM, and of the running ones.
    pub vcpus_defined: u32,
    pub vcpus_running: u32,
    /// Configured memory of every VM, and of the running ones.
    pub memory_defined_bytes: u64,
    pub memory_running_bytes: u64,
    /// Resident memory of the running QEMU processes.
    pub memory_rss_bytes: u64,
    /// Virtual sizes of every VM's disks (what guests could fill).
    pub disk_provisioned_bytes: u64,
    /// What those disks take on the host now (allocated, with their backing layers once each).
    pub disk_used_bytes: u64,
    pub filesystems: Vec<FsUsage>,
}

/// What an alert rule can watch. VM metrics are per VM; `host_*` and `*_space` are the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// A VM's CPU use, percent of its vCPUs (`VmCpu::percent_of_vcpus`).
    Cpu,
    /// A VM's resident memory, percent of its configured memory.
    Memory,
    /// A VM's disk reads / writes over all disks, bytes per second.
    DiskRead,
    DiskWrite,
    /// A VM's network traffic over all NICs, bytes per second.
    NetRx,
    NetTx,
    /// The host's CPU use, percent of all CPUs.
    HostCpu,
    /// The host's memory in use (total − available), percent.
    HostMemory,
    /// The host's 1-minute load average.
    HostLoad,
    /// Space used on the file system of the data dir / the backup store, percent.
    DataSpace,
    BackupSpace,
}

/// How a metric's values are written in alert rules and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    /// 0–100, written `90%`.
    Percent,
    /// Bytes per second, written as a size (`50M` = 50 MiB/s).
    BytesPerSecond,
    /// A plain number.
    Number,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::Cpu,
        Metric::Memory,
        Metric::DiskRead,
        Metric::DiskWrite,
        Metric::NetRx,
        Metric::NetTx,
        Metric::HostCpu,
        Metric::HostMemory,
        Metric::HostLoad,
        Metric::DataSpace,
        Metric::BackupSpace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::DiskRead => "disk_read",
            Metric::DiskWrite => "disk_write",
            Metric::NetRx => "net_rx",
            Metric::NetTx => "net_tx",
            Metric::HostCpu => "host_cpu",
            Metric::HostMemory => "host_memory",
            Metric::HostLoad => "host_load",
            Metric::DataSpace => "data_space",
            Metric::BackupSpace => "backup_space",
        }
    }

    pub fn unit(self) -> MetricUnit {
        match self {
            Metric::DiskRead | Metric::DiskWrite | Metric::NetRx | Metric::NetTx => MetricUnit::BytesPerSecond,
            Metric::HostLoad => MetricUnit::Number,
            _ => MetricUnit::Percent,
        }
    }

    /// Whether the metric belongs to each VM (else to the host).
    pub fn per_vm(self) -> bool {
        matches!(
            self,
            Metric::Cpu | Metric::Memory | Metric::DiskRead | Metric::DiskWrite | Metric::NetRx | Metric::NetTx
        )
    }

    /// This metric's value for a VM in a report with rates, if it has one.
    pub fn of_vm(self, vm: &VmMetrics) -> Option<f64> {
        let sum = |f: &dyn Fn(&DiskIo) -> Option<f64>| -> Option<f64> {
            vm.disks.iter().map(f).try_fold(0.0, |a, v| v.map(|v| a + v))
        };
        let nsum = |f: &dyn Fn(&NicIo) -> Option<f64>| -> Option<f64> {
            if vm.nics.is_empty() {
                return None;
            }
            vm.nics.iter().map(f).try_fold(0.0, |a, v| v.map(|v| a + v))
        };
        match self {
            Metric::Cpu => vm.cpu.as_ref()?.percent_of_vcpus,
            Metric::Memory => Some(vm.memory.as_ref()?.rss_percent),
            Metric::DiskRead if vm.cpu.is_some() => sum(&|d| d.read_bytes_per_second),
            Metric::DiskWrite if vm.cpu.is_some() => sum(&|d| d.write_bytes_per_second),
            Metric::NetRx => nsum(&|n| n.rx_bytes_per_second),
            Metric::NetTx => nsum(&|n| n.tx_bytes_per_second),
            _ => None,
        }
    }

    /// This metric's value for the host, if it is a host metric and the report has it.
    pub fn of_host(self, host: &HostMetrics) -> Option<f64> {
        let fs = |role: &str| {
            host.filesystems
                .iter()
                .find(|f| f.role == role)
                .map(FsUsage::used_percent)
        };
        match self {
            Metric::HostCpu => host.cpu_percent,
            Metric::HostMemory if host.memory_total_bytes > 0 => Some(
                100.0 * host.memory_total_bytes.saturating_sub(host.memory_available_bytes) as f64
                    / host.memory_total_bytes as f64,
            ),
            Metric::HostLoad => Some(host.load[0]),
            Metric::DataSpace => fs("data"),
            Metric::BackupSpace => fs("backup"),
            _ => None,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown metric name; the message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?}; known metrics: {list}", list = Metric::ALL.map(Metric::as_str).join(", "))]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMetric(s.to_string()))
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Metric {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Metric::ALL.map(Metric::as_str)))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Metric {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_unknown_ones_list_the_known() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>().unwrap(), m);
        }
        let e = "cpux".parse::<Metric>().unwrap_err().to_string();
        assert!(
            e.contains("\"cpux\"") && e.contains("host_load") && e.contains("disk_write"),
            "{e}"
        );
    }

    #[test]
    fn used_percent_of_a_file_system() {
        let f = FsUsage {
            role: "data".into(),
            path: "/".into(),
            size_bytes: 200,
            available_bytes: 50,
        };
        assert_eq!(f.used_percent(), 75.0);
    }
}
