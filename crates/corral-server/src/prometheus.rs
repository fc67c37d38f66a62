//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4) of the sampler's
//! latest pass, each VM's last backup and failed jobs. Outside `/api/v1` (the path Prometheus
//! expects), but with the API's authentication: any valid token or session, a viewer is
//! enough (Prometheus sends `Authorization: Bearer` from its `credentials_file`).
//!
//! [`render`] is a pure function of its inputs. Each family is written by one call with all of
//! its samples, so `# HELP` and `# TYPE` come once per family and a family's samples are
//! contiguous by construction (promtool 2.42 checks neither).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use corral_engine::metrics::{BackupFacts, JobFailureCounter, LastBackup};
use corral_types::{MetricsReport, RunState};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape needs beyond the sampler: remembered between scrapes.
#[derive(Default)]
pub struct Exporter {
    pub backups: BackupFacts,
    /// Counts job failures from the daemon's start.
    pub failures: JobFailureCounter,
}

/// What [`render`] writes beside the sampler's report.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// corral's version, for `corral_build_info`.
    pub version: String,
    /// Unix milliseconds of the scrape (for the sample's age).
    pub now_ms: i64,
    /// How long the sampler's last pass took.
    pub sample_duration_seconds: f64,
    /// The newest backup of each VM that has one.
    pub backups: Vec<LastBackup>,
    /// Failed jobs by kind since the daemon started.
    pub job_failures: BTreeMap<String, u64>,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// A sample value: integers are written exactly, floats as Prometheus reads them.
#[derive(Clone, Copy)]
enum Num {
    U(u64),
    F(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) if v.is_nan() => f.write_str("NaN"),
            Num::F(v) if v.is_infinite() => f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    /// One family: HELP, TYPE and every sample, or nothing when it has no samples.
    fn family<'a>(&mut self, name: &str, kind: Kind, help: &str, samples: impl IntoIterator<Item = (Labels<'a>, Num)>) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                self.0.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.0.push(',');
                    }
                    let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
                }
                self.0.push('}');
            }
            let _ = writeln!(self.0, " {value}");
        }
    }
}

const STATES: [RunState; 5] = [
    RunState::Running,
    RunState::Paused,
    RunState::Saved,
    RunState::Stopped,
    RunState::Crashed,
];

/// The whole exposition: build info and the sample's age, the host, every VM (state and
/// configuration for all, resource counters for those with a QEMU process), backups and job
/// failures. Ends with a newline.
pub fn render(report: &MetricsReport, facts: &Facts) -> String {
    use Kind::{Counter, Gauge};
    use Num::{F, U};
    let mut o = Out(String::new());
    let h = &report.host;
    let vms = &report.vms;
    let one = |v: f64| vec![(Labels::new(), F(v))];

    o.family(
        "corral_build_info",
        Gauge,
        "corral's version; always 1.",
        [(vec![("version", facts.version.as_str())], U(1))],
    );
    o.family(
        "corral_sample_timestamp_seconds",
        Gauge,
        "When the figures below were sampled (the daemon samples every metrics.interval).",
        one(report.taken_ms as f64 / 1000.0),
    );
    o.family(
        "corral_sample_age_seconds",
        Gauge,
        "How old the sampled figures were at this scrape.",
        one((facts.now_ms - report.taken_ms).max(0) as f64 / 1000.0),
    );
    o.family(
        "corral_sample_duration_seconds",
        Gauge,
        "How long the daemon's last sampling pass over the host and its VMs took.",
        one(facts.sample_duration_seconds),
    );

    // The host.
    o.family(
        "corral_host_cpus",
        Gauge,
        "Logical CPUs of the host.",
        [(vec![], U(h.cpus as u64))],
    );
    o.family(
        "corral_host_cpu_seconds_total",
        Counter,
        "CPU time of all host CPUs since boot: busy (user, nice, system, irq, softirq, steal) or idle (idle, iowait).",
        [
            (vec![("mode", "busy")], F(h.cpu_busy_seconds_total)),
            (vec![("mode", "idle")], F(h.cpu_idle_seconds_total)),
        ],
    );
    o.family(
        "corral_host_memory_total_bytes",
        Gauge,
        "The host's memory (MemTotal).",
        [(vec![], U(h.memory_total_bytes))],
    );
    o.family(
        "corral_host_memory_available_bytes",
        Gauge,
        "Memory the host could give to new work without swapping (MemAvailable).",
        [(vec![], U(h.memory_available_bytes))],
    );
    for (i, name) in ["corral_host_load1", "corral_host_load5", "corral_host_load15"]
        .into_iter()
        .enumerate()
    {
        let help = [
            "1-minute load average.",
            "5-minute load average.",
            "15-minute load average.",
        ][i];
        o.family(name, Gauge, help, one(h.load[i]));
    }
    fn fs(f: &corral_types::FsUsage) -> Labels<'_> {
        vec![("role", f.role.as_str()), ("path", f.path.as_str())]
    }
    o.family(
        "corral_host_filesystem_size_bytes",
        Gauge,
        "Size of the file system holding corral's data (role=data) or backup store (role=backup).",
        h.filesystems.iter().map(|f| (fs(f), U(f.size_bytes))),
    );
    o.family(
        "corral_host_filesystem_available_bytes",
        Gauge,
        "Space left for unprivileged writers on that file system.",
        h.filesystems.iter().map(|f| (fs(f), U(f.available_bytes))),
    );

    // Every VM, whatever its state.
    fn vm(v: &corral_types::VmMetrics) -> Labels<'_> {
        vec![("vm", v.name.as_str())]
    }
    o.family(
        "corral_vm_up",
        Gauge,
        "1 when the VM's QEMU process runs (running or paused), else 0.",
        vms.iter().map(|v| (vm(v), U(v.state.is_active() as u64))),
    );
    o.family(
        "corral_vm_state",
        Gauge,
        "The VM's state: 1 on the series of its current state, 0 on the others.",
        vms.iter().flat_map(|v| {
            STATES.iter().map(move |s| {
                (
                    vec![("vm", v.name.as_str()), ("state", s.as_str())],
                    U((v.state == *s) as u64),
                )
            })
        }),
    );
    o.family(
        "corral_vm_vcpus",
        Gauge,
        "vCPUs the VM is configured with.",
        vms.iter().map(|v| (vm(v), U(v.vcpus as u64))),
    );
    o.family(
        "corral_vm_memory_configured_bytes",
        Gauge,
        "Memory the VM is configured with.",
        vms.iter().map(|v| (vm(v), U(v.memory_bytes))),
    );

    // VMs with a QEMU process. Counters start at 0 with each QEMU process.
    o.family(
        "corral_vm_uptime_seconds",
        Gauge,
        "How long the VM's QEMU process has run.",
        vms.iter().filter_map(|v| Some((vm(v), U(v.uptime_seconds?)))),
    );
    o.family(
        "corral_vm_cpu_seconds_total",
        Counter,
        "CPU time (user + system) of the VM's QEMU process, all threads.",
        vms.iter()
            .filter_map(|v| Some((vm(v), F(v.cpu.as_ref()?.seconds_total)))),
    );
    let vcpu_labels: Vec<(String, &str, f64)> = vms
        .iter()
        .flat_map(|v| {
            v.cpu
                .iter()
                .flat_map(|c| c.vcpus.iter())
                .map(|t| (t.index.to_string(), v.name.as_str(), t.seconds_total))
        })
        .collect();
    o.family(
        "corral_vm_vcpu_seconds_total",
        Counter,
        "CPU time of each vCPU thread of the VM's QEMU process.",
        vcpu_labels
            .iter()
            .map(|(i, name, s)| (vec![("vm", *name), ("vcpu", i.as_str())], F(*s))),
    );
    o.family(
        "corral_vm_memory_rss_bytes",
        Gauge,
        "Resident memory of the VM's QEMU process.",
        vms.iter()
            .filter_map(|v| Some((vm(v), U(v.memory.as_ref()?.rss_bytes)))),
    );
    o.family(
        "corral_vm_memory_balloon_bytes",
        Gauge,
        "Memory the guest has through its balloon device, for VMs with one.",
        vms.iter()
            .filter_map(|v| Some((vm(v), U(v.memory.as_ref()?.balloon_actual_bytes?)))),
    );
    type DiskField = fn(&corral_types::DiskIo) -> u64;
    let disk_families: [(&str, &str, DiskField); 4] = [
        (
            "corral_vm_disk_read_bytes_total",
            "Bytes the guest read from the disk.",
            |d| d.read_bytes_total,
        ),
        (
            "corral_vm_disk_write_bytes_total",
            "Bytes the guest wrote to the disk.",
            |d| d.write_bytes_total,
        ),
        (
            "corral_vm_disk_read_operations_total",
            "Read requests the guest made to the disk.",
            |d| d.read_ops_total,
        ),
        (
            "corral_vm_disk_write_operations_total",
            "Write requests the guest made to the disk.",
            |d| d.write_ops_total,
        ),
    ];
    for (name, help, field) in disk_families {
        o.family(
            name,
            Counter,
            help,
            vms.iter().flat_map(|v| {
                v.disks
                    .iter()
                    .map(move |d| (vec![("vm", v.name.as_str()), ("disk", d.disk.as_str())], U(field(d))))
            }),
        );
    }
    type NicField = fn(&corral_types::NicIo) -> u64;
    let nic_families: [(&str, &str, NicField); 4] = [
        (
            "corral_vm_network_receive_bytes_total",
            "Bytes the guest received on the NIC (counted by the guest agent).",
            |n| n.rx_bytes_total,
        ),
        (
            "corral_vm_network_transmit_bytes_total",
            "Bytes the guest sent on the NIC (counted by the guest agent).",
            |n| n.tx_bytes_total,
        ),
        (
            "corral_vm_network_receive_packets_total",
            "Packets the guest received on the NIC.",
            |n| n.rx_packets_total,
        ),
        (
            "corral_vm_network_transmit_packets_total",
            "Packets the guest sent on the NIC.",
            |n| n.tx_packets_total,
        ),
    ];
    for (name, help, field) in nic_families {
        o.family(
            name,
            Counter,
            help,
            vms.iter().flat_map(|v| {
                v.nics
                    .iter()
                    .map(move |n| (vec![("vm", v.name.as_str()), ("nic", n.nic.as_str())], U(field(n))))
            }),
        );
    }

    // Backups of the VMs defined now, and jobs.
    let defined = |b: &&LastBackup| vms.iter().any(|v| v.name == b.vm);
    o.family(
        "corral_backup_last_success_timestamp_seconds",
        Gauge,
        "When the VM's newest backup in the store ended.",
        facts
            .backups
            .iter()
            .filter(defined)
            .map(|b| (vec![("vm", b.vm.as_str())], F(b.end_unix_seconds))),
    );
    o.family(
        "corral_backup_duration_seconds",
        Gauge,
        "How long the VM's newest backup in the store took.",
        facts
            .backups
            .iter()
            .filter(defined)
            .map(|b| (vec![("vm", b.vm.as_str())], F(b.duration_seconds))),
    );
    o.family(
        "corral_job_failures_total",
        Counter,
        "Jobs (backups, restores, clones, merges, snapshots…) that failed since the daemon started, by kind.",
        facts
            .job_failures
            .iter()
            .map(|(k, n)| (vec![("kind", k.as_str())], U(*n))),
    );
    o.0
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(serve))
}

/// `GET /metrics`: the latest sampling pass (one is run now if none has yet), backups and job
/// failures. Any authenticated caller; backup or job history that cannot be read is logged
/// and left out rather than failing the scrape.
async fn serve(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let report: Arc<MetricsReport> = state.sampler.latest_or_pass().await?;
    let engine = &state.engine;
    let exporter = &state.exporter;
    let backups = exporter.backups.last_per_vm(engine).unwrap_or_else(|e| {
        tracing::warn!("/metrics: cannot read the backups: {e}");
        vec![]
    });
    let job_failures = exporter.failures.totals(engine).unwrap_or_else(|e| {
        tracing::warn!("/metrics: cannot read the job history: {e}");
        BTreeMap::new()
    });
    let facts = Facts {
        version: env!("CARGO_PKG_VERSION").to_string(),
        now_ms: now_ms(),
        sample_duration_seconds: state.sampler.cost().wall.as_secs_f64(),
        backups,
        job_failures,
    };
    let body = render(&report, &facts);
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
