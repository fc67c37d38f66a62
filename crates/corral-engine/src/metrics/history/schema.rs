//! The tables of `metrics.db` and what one pass puts in them.
//!
//! Raw tables hold one row per pass (per VM, and for the host) with the pass's rates; the
//! average tables one row per 5-minute bucket with, per column, the average and the highest
//! sample (`<col>_avg`, `<col>_max`) and the number of samples `n`. VMs are numbered in
//! `vms` so that rows carry a small integer rather than the name. Every table is keyed by
//! (subject, time): a range read or a prune is a walk along the key, never a scan.

use corral_types::{HostMetrics, Metric, RunState, SeriesUnit, VmMetrics};

pub(super) const SCHEMA_VERSION: i64 = 1;

/// One stored figure: its column, and its name, label and unit in the API.
pub(super) struct Col {
    pub col: &'static str,
    pub name: &'static str,
    pub label: &'static str,
    pub unit: SeriesUnit,
}

const fn col(col: &'static str, name: &'static str, label: &'static str, unit: SeriesUnit) -> Col {
    Col { col, name, label, unit }
}

pub(super) const VM_COLS: [Col; 9] = [
    col("cpu", "cpu_percent", "CPU (% of one host CPU)", SeriesUnit::Percent),
    col(
        "cpu_vcpus",
        "cpu_percent_of_vcpus",
        "CPU (% of its vCPUs)",
        SeriesUnit::Percent,
    ),
    col("rss", "rss_bytes", "Resident memory", SeriesUnit::Bytes),
    col(
        "rd_bps",
        "disk_read_bytes_per_second",
        "Disk read",
        SeriesUnit::BytesPerSecond,
    ),
    col(
        "wr_bps",
        "disk_write_bytes_per_second",
        "Disk write",
        SeriesUnit::BytesPerSecond,
    ),
    col(
        "rd_ops",
        "disk_read_ops_per_second",
        "Disk reads",
        SeriesUnit::OpsPerSecond,
    ),
    col(
        "wr_ops",
        "disk_write_ops_per_second",
        "Disk writes",
        SeriesUnit::OpsPerSecond,
    ),
    col(
        "rx_bps",
        "net_rx_bytes_per_second",
        "Network received",
        SeriesUnit::BytesPerSecond,
    ),
    col(
        "tx_bps",
        "net_tx_bytes_per_second",
        "Network sent",
        SeriesUnit::BytesPerSecond,
    ),
];

pub(super) const HOST_COLS: [Col; 8] = [
    col("cpu", "cpu_percent", "CPU (% of all CPUs)", SeriesUnit::Percent),
    col("mem_used", "memory_used_bytes", "Memory used", SeriesUnit::Bytes),
    col("mem_total", "memory_total_bytes", "Memory", SeriesUnit::Bytes),
    col("load1", "load1", "Load (1 min)", SeriesUnit::Number),
    col("load5", "load5", "Load (5 min)", SeriesUnit::Number),
    col("load15", "load15", "Load (15 min)", SeriesUnit::Number),
    col(
        "data_pct",
        "data_used_percent",
        "Data file system used",
        SeriesUnit::Percent,
    ),
    col(
        "backup_pct",
        "backup_used_percent",
        "Backup file system used",
        SeriesUnit::Percent,
    ),
];

/// The VM series made from the state: the share of samples in which QEMU ran.
pub(super) const RUNNING: Col = col("up", "running_percent", "Running", SeriesUnit::Percent);

/// The width of one average bucket.
pub(super) const BUCKET_MS: i64 = 300_000;

fn cols(list: &[Col], f: impl Fn(&Col) -> String) -> String {
    list.iter().map(f).collect::<Vec<_>>().join(", ")
}

/// The schema, made on first open (after `auto_vacuum`, which must precede any table).
pub(super) fn ddl() -> String {
    let raw = |list: &[Col]| cols(list, |c| format!("{} REAL", c.col));
    let avg = |list: &[Col]| cols(list, |c| format!("{0}_avg REAL, {0}_max REAL", c.col));
    format!(
        "CREATE TABLE vms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         CREATE TABLE vm_raw (vm INTEGER NOT NULL, t INTEGER NOT NULL, state INTEGER NOT NULL, {vr},
                              PRIMARY KEY (vm, t)) WITHOUT ROWID;
         CREATE TABLE vm_avg (vm INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL, up INTEGER NOT NULL, {va},
                              PRIMARY KEY (vm, t)) WITHOUT ROWID;
         CREATE TABLE host_raw (t INTEGER PRIMARY KEY, {hr});
         CREATE TABLE host_avg (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, {ha});
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         PRAGMA user_version = {SCHEMA_VERSION};",
        vr = raw(&VM_COLS),
        va = avg(&VM_COLS),
        hr = raw(&HOST_COLS),
        ha = avg(&HOST_COLS),
    )
}

pub(super) fn insert_vm_raw() -> String {
    let names = cols(&VM_COLS, |c| c.col.to_string());
    let marks = cols(&VM_COLS, |_| "?".to_string());
    format!("INSERT OR REPLACE INTO vm_raw (vm, t, state, {names}) VALUES (?, ?, ?, {marks})")
}

pub(super) fn insert_host_raw() -> String {
    let names = cols(&HOST_COLS, |c| c.col.to_string());
    let marks = cols(&HOST_COLS, |_| "?".to_string());
    format!("INSERT OR REPLACE INTO host_raw (t, {names}) VALUES (?, {marks})")
}

/// Averages and maxima of the raw rows of `[?2, ?3)` per 5-minute bucket, for one VM (`?1`).
pub(super) fn rollup_vm() -> String {
    let names = cols(&VM_COLS, |c| format!("{0}_avg, {0}_max", c.col));
    let aggs = cols(&VM_COLS, |c| format!("AVG({0}), MAX({0})", c.col));
    format!(
        "INSERT OR REPLACE INTO vm_avg (vm, t, n, up, {names})
         SELECT vm, t / {BUCKET_MS} * {BUCKET_MS}, COUNT(*), SUM(state IN (1, 2)), {aggs}
         FROM vm_raw WHERE vm = ?1 AND t >= ?2 AND t < ?3 GROUP BY t / {BUCKET_MS}"
    )
}

/// The same for the host, over `[?1, ?2)`.
pub(super) fn rollup_host() -> String {
    let names = cols(&HOST_COLS, |c| format!("{0}_avg, {0}_max", c.col));
    let aggs = cols(&HOST_COLS, |c| format!("AVG({0}), MAX({0})", c.col));
    format!(
        "INSERT OR REPLACE INTO host_avg (t, n, {names})
         SELECT t / {BUCKET_MS} * {BUCKET_MS}, COUNT(*), {aggs}
         FROM host_raw WHERE t >= ?1 AND t < ?2 GROUP BY t / {BUCKET_MS}"
    )
}

/// How a state is stored (`state IN (1, 2)`: QEMU runs).
pub(super) fn state_code(s: RunState) -> i64 {
    match s {
        RunState::Stopped => 0,
        RunState::Running => 1,
        RunState::Paused => 2,
        RunState::Saved => 3,
        RunState::Crashed => 4,
    }
}

/// A VM's figures in `VM_COLS` order. Disk and network figures are summed over the VM's
/// disks and NICs; a VM without QEMU has none.
pub(super) fn vm_values(vm: &VmMetrics) -> [Option<f64>; 9] {
    let cpu = vm.cpu.as_ref();
    let ops = |f: fn(&corral_types::DiskIo) -> Option<f64>| -> Option<f64> {
        vm.pid?;
        vm.disks.iter().map(f).try_fold(0.0, |a, v| v.map(|v| a + v))
    };
    [
        cpu.and_then(|c| c.percent),
        cpu.and_then(|c| c.percent_of_vcpus),
        vm.memory.as_ref().map(|m| m.rss_bytes as f64),
        Metric::DiskRead.of_vm(vm),
        Metric::DiskWrite.of_vm(vm),
        ops(|d| d.read_ops_per_second),
        ops(|d| d.write_ops_per_second),
        Metric::NetRx.of_vm(vm),
        Metric::NetTx.of_vm(vm),
    ]
}

/// The host's figures in `HOST_COLS` order.
pub(super) fn host_values(h: &HostMetrics) -> [Option<f64>; 8] {
    [
        h.cpu_percent,
        Some(h.memory_total_bytes.saturating_sub(h.memory_available_bytes) as f64),
        Some(h.memory_total_bytes as f64),
        Some(h.load[0]),
        Some(h.load[1]),
        Some(h.load[2]),
        Metric::DataSpace.of_host(h),
        Metric::BackupSpace.of_host(h),
    ]
}
