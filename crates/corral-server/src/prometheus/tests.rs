use super::*;
use corral_types::{DiskIo, FsUsage, HostMetrics, NicIo, VcpuTime, VmCpu, VmMemory, VmMetrics};

fn host() -> HostMetrics {
    HostMetrics {
        cpus: 4,
        cpu_busy_seconds_total: 120.5,
        cpu_idle_seconds_total: 900.25,
        cpu_percent: Some(12.0),
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 6 << 30,
        load: [0.5, 0.25, 0.125],
        filesystems: vec![FsUsage {
            role: "backup".into(),
            path: "/srv/a \"b\" \\c\nd".into(),
            size_bytes: 1000,
            available_bytes: 400,
        }],
    }
}

fn idle(name: &str, state: RunState) -> VmMetrics {
    VmMetrics::configured(name, state, 1, 256 << 20)
}

fn running(name: &str) -> VmMetrics {
    VmMetrics {
        vcpus: 2,
        memory_bytes: 1 << 30,
        state: RunState::Running,
        pid: Some(42),
        uptime_seconds: Some(77),
        cpu: Some(VmCpu {
            seconds_total: 3.5,
            percent: Some(10.0),
            percent_of_vcpus: Some(5.0),
            vcpus: vec![
                VcpuTime {
                    index: 0,
                    thread_id: 43,
                    seconds_total: 1.25,
                    percent: None,
                },
                VcpuTime {
                    index: 1,
                    thread_id: 44,
                    seconds_total: 2.0,
                    percent: None,
                },
            ],
        }),
        memory: Some(VmMemory {
            rss_bytes: 300_000_000,
            rss_percent: 28.0,
            balloon_actual_bytes: None,
        }),
        disks: vec![DiskIo {
            disk: "disk0".into(),
            read_bytes_total: 4096,
            write_bytes_total: 512,
            read_ops_total: 3,
            write_ops_total: 1,
            read_bytes_per_second: None,
            write_bytes_per_second: None,
            read_ops_per_second: None,
            write_ops_per_second: None,
        }],
        nics: vec![NicIo {
            nic: "nic0".into(),
            source: "guest-agent".into(),
            rx_bytes_total: 1000,
            tx_bytes_total: 2000,
            rx_packets_total: 10,
            tx_packets_total: 20,
            rx_bytes_per_second: None,
            tx_bytes_per_second: None,
        }],
        ..idle(name, RunState::Running)
    }
}

fn report() -> MetricsReport {
    MetricsReport {
        taken_ms: 1_700_000_000_000,
        interval_ms: Some(10_000),
        host: host(),
        vms: vec![running("web1"), idle("db", RunState::Stopped)],
    }
}

fn facts() -> Facts {
    Facts {
        version: "1.2.3".into(),
        now_ms: 1_700_000_002_500,
        sample_duration_seconds: 0.25,
        backups: vec![
            LastBackup {
                vm: "db".into(),
                id: "x".into(),
                end_unix_seconds: 1_699_999_000.5,
                duration_seconds: 12.5,
            },
            LastBackup {
                vm: "deleted".into(),
                id: "y".into(),
                end_unix_seconds: 1.0,
                duration_seconds: 1.0,
            },
        ],
        job_failures: BTreeMap::from([("backup".into(), 2), ("clone".into(), 0)]),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn every_series_as_expected_for_a_running_and_a_stopped_vm() {
    let text = render(&report(), &facts());
    assert!(text.ends_with('\n'));
    let l = lines(&text);
    for want in [
        "corral_build_info{version=\"1.2.3\"} 1",
        "corral_sample_age_seconds 2.5",
        "corral_sample_duration_seconds 0.25",
        "corral_host_cpus 4",
        "corral_host_cpu_seconds_total{mode=\"busy\"} 120.5",
        "corral_host_cpu_seconds_total{mode=\"idle\"} 900.25",
        "corral_host_memory_total_bytes 8589934592",
        "corral_host_load15 0.125",
        "corral_vm_up{vm=\"web1\"} 1",
        "corral_vm_up{vm=\"db\"} 0",
        "corral_vm_state{vm=\"web1\",state=\"running\"} 1",
        "corral_vm_state{vm=\"web1\",state=\"stopped\"} 0",
        "corral_vm_state{vm=\"db\",state=\"stopped\"} 1",
        "corral_vm_vcpus{vm=\"web1\"} 2",
        "corral_vm_memory_configured_bytes{vm=\"db\"} 268435456",
        "corral_vm_uptime_seconds{vm=\"web1\"} 77",
        "corral_vm_cpu_seconds_total{vm=\"web1\"} 3.5",
        "corral_vm_vcpu_seconds_total{vm=\"web1\",vcpu=\"1\"} 2",
        "corral_vm_memory_rss_bytes{vm=\"web1\"} 300000000",
        "corral_vm_disk_read_bytes_total{vm=\"web1\",disk=\"disk0\"} 4096",
        "corral_vm_disk_write_bytes_total{vm=\"web1\",disk=\"disk0\"} 512",
        "corral_vm_disk_read_operations_total{vm=\"web1\",disk=\"disk0\"} 3",
        "corral_vm_disk_write_operations_total{vm=\"web1\",disk=\"disk0\"} 1",
        "corral_vm_network_receive_bytes_total{vm=\"web1\",nic=\"nic0\"} 1000",
        "corral_vm_network_transmit_packets_total{vm=\"web1\",nic=\"nic0\"} 20",
        "corral_backup_last_success_timestamp_seconds{vm=\"db\"} 1699999000.5",
        "corral_backup_duration_seconds{vm=\"db\"} 12.5",
        "corral_job_failures_total{kind=\"backup\"} 2",
        "corral_job_failures_total{kind=\"clone\"} 0",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{text}");
    }
    // A stopped VM has no resource series; a deleted VM's backups are not reported; no balloon.
    assert!(!text.contains("corral_vm_cpu_seconds_total{vm=\"db\"}"), "{text}");
    assert!(!text.contains("vm=\"deleted\""), "{text}");
    assert!(!text.contains("corral_vm_memory_balloon_bytes"), "{text}");
}

#[test]
fn help_and_type_once_per_family_and_families_contiguous() {
    let text = render(&report(), &facts());
    let mut seen_families: Vec<String> = vec![];
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!seen_families.contains(&name), "{name} twice");
            seen_families.push(name.clone());
            current = name;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            assert_eq!(w.next(), Some(current.as_str()), "TYPE right after its HELP");
            let kind = w.next().unwrap();
            assert_eq!(kind == "counter", current.ends_with("_total"), "{line}");
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        assert_eq!(name, current, "a sample outside its family: {line}");
    }
    assert!(seen_families.len() > 30, "{seen_families:?}");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("a \"b\" \\c\nd"), "a \\\"b\\\" \\\\c\\nd");
    let text = render(&report(), &facts());
    assert!(
        text.contains("corral_host_filesystem_size_bytes{role=\"backup\",path=\"/srv/a \\\"b\\\" \\\\c\\nd\"} 1000\n"),
        "{text}"
    );
}

#[test]
fn numbers_as_prometheus_reads_them() {
    assert_eq!(Num::F(f64::NAN).to_string(), "NaN");
    assert_eq!(Num::F(f64::INFINITY).to_string(), "+Inf");
    assert_eq!(Num::F(f64::NEG_INFINITY).to_string(), "-Inf");
    assert_eq!(Num::F(0.1).to_string(), "0.1");
    assert_eq!(Num::U(u64::MAX).to_string(), "18446744073709551615");
}

#[test]
fn families_without_samples_are_left_out() {
    let mut r = report();
    r.vms.clear();
    let f = Facts {
        backups: vec![],
        job_failures: BTreeMap::new(),
        ..facts()
    };
    let text = render(&r, &f);
    for absent in ["corral_vm_", "corral_backup_", "corral_job_failures_total"] {
        assert!(!text.contains(absent), "{absent}: {text}");
    }
    assert!(
        text.contains("# TYPE corral_host_cpus gauge\ncorral_host_cpus 4\n"),
        "{text}"
    );
}
