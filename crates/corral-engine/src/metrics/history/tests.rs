//! The history against a real SQLite file, with time injected through the passes' `taken_ms`.

use std::time::Duration;

use corral_types::{
    DiskIo, FsUsage, HistoryRange, HostMetrics, HumanDuration, MetricsReport, RunState, VmCpu, VmMemory, VmMetrics,
};

use super::*;

/// A multiple of a month's step (2 h 30 min), so a short test stays inside one month point.
const T0: i64 = 188_889 * 9_000_000;
const MIN: i64 = 60_000;

fn cfg(interval_s: u64, raw: u64, avg: u64) -> MetricsConfig {
    MetricsConfig {
        interval: HumanDuration(Duration::from_secs(interval_s)),
        raw_retention: HumanDuration(Duration::from_secs(raw)),
        average_retention: HumanDuration(Duration::from_secs(avg)),
    }
}

/// A running VM with CPU `cpu` (process %), or a stopped one (`None`).
fn vm(name: &str, cpu: Option<f64>) -> VmMetrics {
    let running = cpu.is_some();
    VmMetrics {
        name: name.into(),
        state: if running { RunState::Running } else { RunState::Stopped },
        tags: vec![],
        vcpus: 2,
        memory_bytes: 1 << 30,
        pid: running.then_some(42),
        uptime_seconds: None,
        cpu: cpu.map(|c| VmCpu {
            seconds_total: 0.0,
            percent: Some(c),
            percent_of_vcpus: Some(c / 2.0),
            vcpus: vec![],
        }),
        memory: running.then_some(VmMemory {
            rss_bytes: 100 << 20,
            rss_percent: 10.0,
            balloon_actual_bytes: None,
        }),
        disks: if running {
            vec![disk("disk0", cpu.unwrap_or(0.0) * 1000.0), disk("data", 500.0)]
        } else {
            vec![]
        },
        nics: vec![],
    }
}

fn disk(name: &str, write: f64) -> DiskIo {
    DiskIo {
        disk: name.into(),
        read_bytes_total: 0,
        write_bytes_total: 0,
        read_ops_total: 0,
        write_ops_total: 0,
        read_bytes_per_second: Some(0.0),
        write_bytes_per_second: Some(write),
        read_ops_per_second: Some(0.0),
        write_ops_per_second: Some(1.0),
    }
}

fn report(t: i64, vms: Vec<VmMetrics>) -> MetricsReport {
    MetricsReport {
        taken_ms: t,
        interval_ms: Some(10_000),
        host: HostMetrics {
            cpus: 4,
            cpu_busy_seconds_total: 0.0,
            cpu_idle_seconds_total: 0.0,
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
        },
        vms,
    }
}

fn open(dir: &tempfile::TempDir, m: &MetricsConfig) -> History {
    History::open_at(&dir.path().join("metrics.db"), m).unwrap()
}

/// (vm, t, n, up, cpu_avg, cpu_max) of an average row.
type AvgRow = (String, i64, i64, i64, Option<f64>, Option<f64>);

/// Every average row, by VM and time.
fn averages(h: &History) -> Vec<AvgRow> {
    let c = h.reader.lock().unwrap();
    let mut s = c
        .prepare("SELECT name, t, n, up, cpu_avg, cpu_max FROM vm_avg JOIN vms ON vms.id = vm ORDER BY name, t")
        .unwrap();
    s.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn count(h: &History, table: &str) -> i64 {
    h.row_counts()
        .unwrap()
        .into_iter()
        .find(|(t, _)| *t == table)
        .unwrap()
        .1
}

#[test]
fn rollup_averages_and_maxima_per_five_minute_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&dir, &cfg(10, 3600, 86_400));
    // Pass i at T0 + 10 s·i with CPU i; "b" stays stopped; 12 minutes of passes.
    for i in 0..=72 {
        h.record(&report(T0 + i * 10_000, vec![vm("a", Some(i as f64)), vm("b", None)]))
            .unwrap();
    }
    let rows = averages(&h);
    // Two whole buckets are rolled up; the third (10-12 min) is not over yet.
    assert_eq!(
        rows,
        [
            ("a".into(), T0, 30, 30, Some(14.5), Some(29.0)),
            ("a".into(), T0 + 5 * MIN, 30, 30, Some(44.5), Some(59.0)),
            ("b".into(), T0, 30, 0, None, None),
            ("b".into(), T0 + 5 * MIN, 30, 0, None, None),
        ]
    );
    {
        let c = h.reader.lock().unwrap();
        let (n, cpu, mem, load5, data): (i64, f64, f64, f64, f64) = c
            .query_row(
                "SELECT n, cpu_avg, mem_used_max, load5_avg, data_pct_max FROM host_avg WHERE t = ?1",
                [T0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!((n, cpu, mem, load5, data), (30, 25.0, (2u64 << 30) as f64, 0.25, 60.0));
    }

    // A month is one point here: the two averages (weighted by their samples) and the raw
    // minutes after them make the mean of 0..=72, and its maximum.
    let m = h.vm_history("a", HistoryRange::Month, T0 + 720_000).unwrap();
    assert_eq!(m.source, "average");
    assert_eq!(m.times_ms, [T0]);
    let cpu = m.series("cpu_percent").unwrap();
    assert_eq!((cpu.avg[0], cpu.max[0]), (Some(36.0), Some(72.0)));
    assert_eq!(m.series("cpu_percent_of_vcpus").unwrap().avg[0], Some(18.0));
    assert_eq!(m.series("running_percent").unwrap().avg[0], Some(100.0));
    // Disk writes are summed over the VM's disks.
    let wr = m.series("disk_write_bytes_per_second").unwrap();
    assert_eq!(wr.avg[0], Some(36_000.0 + 500.0));
    let b = h.vm_history("b", HistoryRange::Month, T0 + 720_000).unwrap();
    assert_eq!(b.series("cpu_percent").unwrap().avg, [None]);
    assert_eq!(b.series("running_percent").unwrap().avg, [Some(0.0)]);
}

#[test]
fn hour_series_has_a_point_per_step_nulls_for_a_stopped_vm_and_gaps_where_nothing_was_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&dir, &cfg(10, 3600, 86_400));
    let mut t = T0;
    // 10 minutes running, 5 minutes of nothing (daemon down), 4 running, 1 stopped.
    for i in 0..60 {
        h.record(&report(t + i * 10_000, vec![vm("a", Some(50.0))])).unwrap();
    }
    t += 15 * MIN;
    for i in 0..30 {
        let cpu = (i < 24).then_some(80.0);
        h.record(&report(t + i * 10_000, vec![vm("a", cpu)])).unwrap();
    }
    let now = t + 290_000;
    let s = h.vm_history("a", HistoryRange::Hour, now).unwrap();
    assert_eq!((s.step_ms, s.gap_ms, s.source.as_str()), (10_000, 25_000, "raw"));
    assert_eq!(s.times_ms.len(), 90);
    assert!(s.from_ms <= T0 && s.to_ms == now);
    let gaps: Vec<i64> = s
        .times_ms
        .windows(2)
        .filter(|w| w[1] - w[0] > s.gap_ms)
        .map(|w| w[0])
        .collect();
    assert_eq!(gaps, [T0 + 590_000], "one gap, where the daemon was down");
    let cpu = &s.series("cpu_percent").unwrap().avg;
    assert_eq!(cpu[0], Some(50.0));
    assert_eq!(cpu[60], Some(80.0));
    assert!(cpu[84..].iter().all(Option::is_none), "stopped: no CPU figure");
    let running = &s.series("running_percent").unwrap().avg;
    assert_eq!((running[83], running[84]), (Some(100.0), Some(0.0)));
    let rss = &s.series("rss_bytes").unwrap().max;
    assert_eq!(rss[0], Some((100 << 20) as f64));
    // A day groups the same samples into 5-minute points.
    let d = h.vm_history("a", HistoryRange::Day, now).unwrap();
    assert_eq!(d.step_ms, 5 * MIN);
    assert_eq!(d.times_ms, [T0, T0 + 5 * MIN, T0 + 15 * MIN]);
    // The host has its own series; an unknown VM has none.
    let host = h.host_history(HistoryRange::Hour, now).unwrap();
    assert_eq!(host.subject, "host");
    assert_eq!(
        host.series("memory_used_bytes").unwrap().avg[0],
        Some((2u64 << 30) as f64)
    );
    assert!(host.series("running_percent").is_none());
    let none = h.vm_history("nope", HistoryRange::Hour, now).unwrap();
    assert!(none.times_ms.is_empty() && none.series.iter().all(|s| s.avg.is_empty()));
}

#[test]
fn pruning_drops_aged_rows_and_every_row_of_deleted_vms() {
    let dir = tempfile::tempdir().unwrap();
    // Raw rows for an hour (pruned every 15 minutes), averages for a day; a pass a minute.
    let h = open(&dir, &cfg(60, 3600, 86_400));
    for i in 0..180 {
        h.record(&report(T0 + i * MIN, vec![vm("a", Some(1.0)), vm("b", Some(2.0))]))
            .unwrap();
    }
    assert_eq!(count(&h, "vms"), 2);
    // b is deleted: its rows go at the next prune, a's stay.
    for i in 180..30 * 60 {
        h.record(&report(T0 + i * MIN, vec![vm("a", Some(1.0))])).unwrap();
    }
    assert_eq!(count(&h, "vms"), 1);
    assert!(averages(&h).iter().all(|r| r.0 == "a"));
    // At most the retention plus one prune period, and never rows not yet rolled up.
    let raw = count(&h, "vm_raw");
    assert!((60..=76).contains(&raw), "raw rows: {raw}");
    assert_eq!(count(&h, "host_raw"), raw);
    let avg = count(&h, "vm_avg");
    assert!((288..=292).contains(&avg), "average rows: {avg}");
    assert_eq!(count(&h, "host_avg"), avg);
    let now = T0 + (30 * 60 - 1) * MIN;
    let oldest = averages(&h)[0].1;
    assert!(
        oldest >= now - 86_400_000 - 15 * MIN,
        "an average older than a day is kept"
    );
    // What was pruned is really gone from the series too.
    let m = h.vm_history("a", HistoryRange::Month, now).unwrap();
    assert!(m.times_ms[0] >= now - 86_400_000 - 3 * 3_600_000);
    assert!(h.vm_history("b", HistoryRange::Month, now).unwrap().times_ms.is_empty());
}

/// The file stops growing once the retentions are reached; the freed pages are reused.
#[test]
fn size_on_disk_is_bounded_by_the_retentions() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&dir, &cfg(60, 6 * 3600, 86_400));
    let names: Vec<String> = (0..10).map(|i| format!("vm{i}")).collect();
    let pass = |i: i64| {
        let vms = names.iter().map(|n| vm(n, Some((i % 100) as f64))).collect();
        h.record(&report(T0 + i * MIN, vms)).unwrap();
    };
    let checkpoint = || {
        // Past the WAL: a checkpoint moves it into the database file.
        h.writer
            .lock()
            .unwrap()
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    };
    let mut sizes = vec![];
    let half_day = 12 * 60;
    for i in 0..6 * half_day {
        pass(i);
        if i % half_day == half_day - 1 {
            checkpoint();
            sizes.push(h.size_on_disk());
        }
    }
    println!("sizes every 12 h: {sizes:?}");
    // Full after a day (the longer retention); from then on it holds still.
    let (day1, day3) = (sizes[1], sizes[5]);
    assert!(day3 <= day1 + day1 / 10, "still growing: {sizes:?}");
    assert!(sizes[0] < day1, "{sizes:?}");
    assert!(count(&h, "vm_raw") <= 10 * (6 * 60 + 60 + 5));
    assert!(count(&h, "vm_avg") <= 10 * (24 * 12 + 12 + 1));

    // Deleting every VM frees most of the file.
    for i in 0..61 {
        h.record(&report(T0 + (6 * half_day + i) * MIN, vec![])).unwrap();
    }
    checkpoint();
    let after = h.size_on_disk();
    assert!(after < day3 / 4, "{after} bytes left of {day3} with no VMs");
}

#[test]
fn a_reopened_history_keeps_its_rows_and_where_averaging_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let m = cfg(10, 3600, 86_400);
    {
        let h = open(&dir, &m);
        for i in 0..42 {
            h.record(&report(T0 + i * 10_000, vec![vm("a", Some(10.0))])).unwrap();
        }
        assert_eq!(averages(&h).len(), 1);
    }
    // The daemon was down for 40 s; the minutes 5-7 before it are averaged at the bucket's
    // end together with those after.
    let h = open(&dir, &m);
    for i in 45..73 {
        h.record(&report(T0 + i * 10_000, vec![vm("a", Some(30.0))])).unwrap();
    }
    let rows = averages(&h);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let expect = (10.0 * 12.0 + 30.0 * 15.0) / 27.0;
    assert_eq!((rows[1].1, rows[1].2), (T0 + 5 * MIN, 12 + 15));
    assert!((rows[1].4.unwrap() - expect).abs() < 1e-9, "{rows:?}");
    let s = h.vm_history("a", HistoryRange::Hour, T0 + 720_000).unwrap();
    assert_eq!(s.times_ms.len(), 42 + 28);
    assert!(s.times_ms.windows(2).any(|w| w[1] - w[0] > s.gap_ms));
    drop(h);

    // A history made by a newer corral is refused with what to do.
    let c = Connection::open(dir.path().join("metrics.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = History::open_at(&dir.path().join("metrics.db"), &m)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("schema version 99") && e.contains("move the file away"),
        "{e}"
    );
}
