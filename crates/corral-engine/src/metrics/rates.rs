//! Rates from two samples: CPU percentages and bytes/operations per second. A VM whose QEMU
//! changed between the samples (another pid) or whose counters went backwards gets no rates
//! rather than a negative or huge one.

use corral_types::{MetricsReport, VmMetrics};

fn per_second(now: f64, before: f64, secs: f64) -> Option<f64> {
    (now >= before).then(|| (now - before) / secs)
}

fn vm_rates(vm: &mut VmMetrics, before: &VmMetrics, secs: f64) {
    if vm.pid.is_none() || vm.pid != before.pid {
        return;
    }
    if let (Some(c), Some(b)) = (vm.cpu.as_mut(), before.cpu.as_ref()) {
        c.percent = per_second(c.seconds_total, b.seconds_total, secs).map(|v| v * 100.0);
        c.percent_of_vcpus = c.percent.map(|p| p / vm.vcpus.max(1) as f64);
        for t in &mut c.vcpus {
            if let Some(bt) = b.vcpus.iter().find(|x| x.thread_id == t.thread_id) {
                t.percent = per_second(t.seconds_total, bt.seconds_total, secs).map(|v| v * 100.0);
            }
        }
    }
    for d in &mut vm.disks {
        let Some(bd) = before.disks.iter().find(|x| x.disk == d.disk) else {
            continue;
        };
        let r = |now: u64, then: u64| per_second(now as f64, then as f64, secs);
        d.read_bytes_per_second = r(d.read_bytes_total, bd.read_bytes_total);
        d.write_bytes_per_second = r(d.write_bytes_total, bd.write_bytes_total);
        d.read_ops_per_second = r(d.read_ops_total, bd.read_ops_total);
        d.write_ops_per_second = r(d.write_ops_total, bd.write_ops_total);
    }
    for n in &mut vm.nics {
        let Some(bn) = before.nics.iter().find(|x| x.nic == n.nic) else {
            continue;
        };
        n.rx_bytes_per_second = per_second(n.rx_bytes_total as f64, bn.rx_bytes_total as f64, secs);
        n.tx_bytes_per_second = per_second(n.tx_bytes_total as f64, bn.tx_bytes_total as f64, secs);
    }
}

/// Fills in `now`'s rates from `before` (an earlier sample of the same host).
pub fn with_rates(mut now: MetricsReport, before: &MetricsReport) -> MetricsReport {
    let ms = now.taken_ms - before.taken_ms;
    if ms <= 0 {
        return now;
    }
    let secs = ms as f64 / 1000.0;
    now.interval_ms = Some(ms as u64);
    let (h, bh) = (&mut now.host, &before.host);
    let busy = h.cpu_busy_seconds_total - bh.cpu_busy_seconds_total;
    let idle = h.cpu_idle_seconds_total - bh.cpu_idle_seconds_total;
    if busy >= 0.0 && idle >= 0.0 && busy + idle > 0.0 {
        h.cpu_percent = Some(100.0 * busy / (busy + idle));
    }
    for vm in &mut now.vms {
        if let Some(b) = before.vms.iter().find(|b| b.name == vm.name) {
            vm_rates(vm, b, secs);
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::{DiskIo, HostMetrics, RunState, VcpuTime, VmCpu};

    fn report(ms: i64, pid: u32, cpu: f64, vcpu0: f64, read: u64, busy: f64, idle: f64) -> MetricsReport {
        MetricsReport {
            taken_ms: ms,
            interval_ms: None,
            host: HostMetrics {
                cpus: 2,
                cpu_busy_seconds_total: busy,
                cpu_idle_seconds_total: idle,
                cpu_percent: None,
                memory_total_bytes: 0,
                memory_available_bytes: 0,
                load: [0.0; 3],
                filesystems: vec![],
            },
            vms: vec![VmMetrics {
                name: "a".into(),
                state: RunState::Running,
                tags: vec![],
                vcpus: 2,
                memory_bytes: 1 << 30,
                pid: Some(pid),
                uptime_seconds: Some(1),
                cpu: Some(VmCpu {
                    seconds_total: cpu,
                    percent: None,
                    percent_of_vcpus: None,
                    vcpus: vec![VcpuTime {
                        index: 0,
                        thread_id: 7,
                        seconds_total: vcpu0,
                        percent: None,
                    }],
                }),
                memory: None,
                disks: vec![DiskIo {
                    disk: "disk0".into(),
                    read_bytes_total: read,
                    write_bytes_total: 0,
                    read_ops_total: 0,
                    write_ops_total: 0,
                    read_bytes_per_second: None,
                    write_bytes_per_second: None,
                    read_ops_per_second: None,
                    write_ops_per_second: None,
                }],
                nics: vec![],
            }],
        }
    }

    #[test]
    fn rates_over_two_seconds() {
        let r = with_rates(
            report(12_000, 9, 13.0, 4.0, 4096, 30.0, 10.0),
            &report(10_000, 9, 10.0, 3.0, 0, 20.0, 10.0),
        );
        assert_eq!(r.interval_ms, Some(2000));
        let c = r.vms[0].cpu.as_ref().unwrap();
        assert_eq!(c.percent, Some(150.0));
        assert_eq!(c.percent_of_vcpus, Some(75.0));
        assert_eq!(c.vcpus[0].percent, Some(50.0));
        assert_eq!(r.vms[0].disks[0].read_bytes_per_second, Some(2048.0));
        assert_eq!(r.host.cpu_percent, Some(100.0));
    }

    #[test]
    fn a_new_qemu_or_a_counter_going_back_gives_no_rate() {
        let r = with_rates(
            report(12_000, 10, 13.0, 4.0, 4096, 30.0, 12.0),
            &report(10_000, 9, 10.0, 3.0, 0, 20.0, 10.0),
        );
        assert_eq!(r.vms[0].cpu.as_ref().unwrap().percent, None);
        assert_eq!(r.vms[0].disks[0].read_bytes_per_second, None);
        assert!((r.host.cpu_percent.unwrap() - 83.333).abs() < 0.01);
        let r = with_rates(
            report(12_000, 9, 9.0, 4.0, 0, 30.0, 10.0),
            &report(10_000, 9, 10.0, 3.0, 4096, 20.0, 10.0),
        );
        assert_eq!(r.vms[0].cpu.as_ref().unwrap().percent, None);
        assert_eq!(r.vms[0].disks[0].read_bytes_per_second, None);
        // Samples out of order: no rates at all.
        let r = with_rates(
            report(10_000, 9, 13.0, 4.0, 1, 30.0, 10.0),
            &report(10_000, 9, 10.0, 3.0, 0, 20.0, 10.0),
        );
        assert_eq!(r.interval_ms, None);
    }
}
