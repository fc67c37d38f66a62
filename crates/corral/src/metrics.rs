//! `corral metrics`: resource use now (two samples an interval apart), continuously with
//! `--watch`, or what VMs are given against the host with `--summary`.

use std::io::Write;
use std::time::Duration;

use corral_engine::metrics::with_rates;
use corral_engine::Engine;
use corral_types::{ByteSize, MetricsReport, MetricsSummary};

use crate::output;

/// What `corral metrics` was asked for.
pub enum Mode {
    /// Two samples this far apart, with rates.
    Over(Duration),
    /// The same again and again, each against the one before, until ^C.
    Watch(Duration),
    /// One sample: counters only.
    Once,
    Summary,
}

pub async fn run(engine: &Engine, vms: &[String], mode: Mode, json: bool) -> anyhow::Result<()> {
    let (interval, watch) = match mode {
        Mode::Summary => {
            let s = engine.metrics_summary().await?;
            if json {
                output::json(&s);
            } else {
                print_summary(&s);
            }
            return Ok(());
        }
        Mode::Once => {
            print(&engine.metrics_sample(vms).await?, json, false);
            return Ok(());
        }
        Mode::Over(i) => (i, false),
        Mode::Watch(i) => (i, true),
    };
    if interval.is_zero() {
        anyhow::bail!("--interval must be longer than 0 (rates need two samples apart in time; try --interval 2s)");
    }
    let mut before = engine.metrics_sample(vms).await?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = engine.metrics_sample(vms).await?;
        let report = with_rates(now.clone(), &before);
        before = now;
        print(&report, json, watch);
        if !watch {
            return Ok(());
        }
    }
}

/// One report: JSON (one line each when watching, so a reader can follow the stream) or
/// the table (the screen cleared first when watching on a terminal).
pub fn print(report: &MetricsReport, json: bool, watch: bool) {
    if json && watch {
        println!("{}", serde_json::to_string(report).expect("serialisable"));
    } else if json {
        output::json(report);
    } else {
        if watch && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("\x1b[H\x1b[2J");
        }
        print_report(report);
    }
    let _ = std::io::stdout().flush();
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}%"))
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{}/s", ByteSize(v.round() as u64).approx()))
}

pub fn print_report(r: &MetricsReport) {
    let h = &r.host;
    let used = h.memory_total_bytes.saturating_sub(h.memory_available_bytes);
    println!(
        "host: {} CPUs {} busy, load {:.2} {:.2} {:.2}, memory {} of {} in use",
        h.cpus,
        pct(h.cpu_percent),
        h.load[0],
        h.load[1],
        h.load[2],
        ByteSize(used).approx(),
        ByteSize(h.memory_total_bytes).approx()
    );
    print_filesystems(&h.filesystems);
    println!();
    use corral_types::Metric;
    let rows: Vec<Vec<String>> = r
        .vms
        .iter()
        .map(|vm| {
            let cpu = vm.cpu.as_ref();
            vec![
                vm.name.clone(),
                vm.state.to_string(),
                pct(cpu.and_then(|c| c.percent)),
                pct(cpu.and_then(|c| c.percent_of_vcpus)),
                vm.memory.as_ref().map_or("-".into(), |m| {
                    format!(
                        "{} / {}",
                        ByteSize(m.rss_bytes).approx(),
                        ByteSize(vm.memory_bytes).approx()
                    )
                }),
                rate(Metric::DiskRead.of_vm(vm)),
                rate(Metric::DiskWrite.of_vm(vm)),
                rate(Metric::NetRx.of_vm(vm)),
                rate(Metric::NetTx.of_vm(vm)),
                vm.uptime_seconds.map_or("-".into(), output::uptime),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "STATE",
            "CPU",
            "OF VCPUS",
            "MEMORY (RSS / GIVEN)",
            "DISK READ",
            "DISK WRITE",
            "NET RX",
            "NET TX",
            "UPTIME",
        ],
        &rows,
    );
}

fn print_filesystems(list: &[corral_types::FsUsage]) {
    for f in list {
        println!(
            "{}: {} ({:.0}% used, {} free of {})",
            f.role,
            f.path,
            f.used_percent(),
            ByteSize(f.available_bytes).approx(),
            ByteSize(f.size_bytes).approx()
        );
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * a as f64 / b as f64)
    }
}

pub fn print_summary(s: &MetricsSummary) {
    let rows = vec![
        vec![
            "vCPUs".to_string(),
            s.vcpus_running.to_string(),
            s.vcpus_defined.to_string(),
            format!("{} CPUs", s.host_cpus),
            ratio(s.vcpus_running as u64, s.host_cpus as u64),
        ],
        vec![
            "memory".to_string(),
            format!(
                "{} (RSS {})",
                ByteSize(s.memory_running_bytes).approx(),
                ByteSize(s.memory_rss_bytes).approx()
            ),
            ByteSize(s.memory_defined_bytes).approx(),
            ByteSize(s.host_memory_bytes).approx(),
            ratio(s.memory_running_bytes, s.host_memory_bytes),
        ],
    ];
    println!("{} VMs, {} running", s.vms, s.vms_running);
    output::table(&["RESOURCE", "RUNNING VMS", "ALL VMS", "HOST", "COMMITTED"], &rows);
    println!();
    println!(
        "disks: {} provisioned, {} used on the host ({} of provisioned)",
        ByteSize(s.disk_provisioned_bytes).approx(),
        ByteSize(s.disk_used_bytes).approx(),
        ratio(s.disk_used_bytes, s.disk_provisioned_bytes)
    );
    print_filesystems(&s.filesystems);
}
