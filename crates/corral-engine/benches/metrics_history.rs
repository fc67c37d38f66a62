//! The size of `metrics.db` and the cost of one pass's write (the figures in
//! docs/metrics.md): 10 VMs sampled every 10 s with the default retentions, written as the
//! daemon would over 30 days (one pass per 5 minutes fills the average tables) and then a
//! day at 10 s (the raw ones), with the time each write of that last day took.
//!
//! `cargo bench -p corral-engine --bench metrics_history`

use std::time::{Duration, Instant};

use corral_engine::config::MetricsConfig;
use corral_engine::metrics::History;
use corral_types::{DiskIo, FsUsage, HostMetrics, HumanDuration, MetricsReport, RunState, VmCpu, VmMemory, VmMetrics};

const VMS: usize = 10;
const DAY_MS: i64 = 86_400_000;

fn vm(name: &str, cpu: f64) -> VmMetrics {
    let disk = |name: &str, write: f64| DiskIo {
        disk: name.into(),
        read_bytes_total: 0,
        write_bytes_total: 0,
        read_ops_total: 0,
        write_ops_total: 0,
        read_bytes_per_second: Some(0.0),
        write_bytes_per_second: Some(write),
        read_ops_per_second: Some(0.0),
        write_ops_per_second: Some(1.0),
    };
    VmMetrics {
        pid: Some(42),
        cpu: Some(VmCpu::from_percent(0.0, cpu / 2.0, 2)),
        memory: Some(VmMemory {
            rss_bytes: 100 << 20,
            rss_percent: 10.0,
            balloon_actual_bytes: None,
        }),
        disks: vec![disk("disk0", cpu * 1000.0), disk("data", 500.0)],
        ..VmMetrics::configured(name, RunState::Running, 2, 1 << 30)
    }
}

fn report(t: i64, names: &[String]) -> MetricsReport {
    let cpu = ((t / 1000) % 377) as f64 / 3.7;
    MetricsReport {
        taken_ms: t,
        interval_ms: Some(10_000),
        host: HostMetrics {
            cpus: 4,
            cpu_percent: Some(25.0),
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 6 << 30,
            load: [0.5, 0.25, 0.125],
            filesystems: vec![FsUsage {
                role: "data".into(),
                path: "/".into(),
                size_bytes: 100,
                available_bytes: 40,
            }],
            ..Default::default()
        },
        vms: names.iter().map(|n| vm(n, cpu)).collect(),
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("metrics.db");
    let m = MetricsConfig {
        interval: HumanDuration(Duration::from_secs(10)),
        raw_retention: HumanDuration(Duration::from_secs(86_400)),
        average_retention: HumanDuration(Duration::from_secs(30 * 86_400)),
    };
    let names: Vec<String> = (0..VMS).map(|i| format!("web-{i:02}")).collect();
    let end = 188_889 * 9_000_000;
    let h = History::open_at(&path, &m).expect("open the history");
    let mut t = end - 30 * DAY_MS;
    while t < end - DAY_MS {
        h.record(&report(t, &names)).expect("record");
        t += 5 * 60_000;
    }
    let mut writes = vec![];
    while t < end {
        let r = report(t, &names);
        let t0 = Instant::now();
        h.record(&r).expect("record");
        writes.push(t0.elapsed());
        t += 10_000;
    }
    let rows = h.row_counts().expect("row counts");
    // Closing the last connection folds the WAL into the file: the settled size.
    drop(h);
    let size = History::open_at(&path, &m).expect("reopen").size_on_disk();
    writes.sort();
    println!(
        "metrics.db, {VMS} VMs, 30 days: {size} bytes ({:.1} MiB); rows {rows:?}",
        size as f64 / (1 << 20) as f64
    );
    println!(
        "one pass's write ({} writes): median {:?}, p99 {:?}, max {:?}",
        writes.len(),
        writes[writes.len() / 2],
        writes[writes.len() * 99 / 100],
        writes[writes.len() - 1]
    );
}
