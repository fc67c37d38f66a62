use super::*;
use corral_types::{DiskIo, FsUsage, HostMetrics, NicIo, VcpuTime, VmCpu, VmMemory};

fn idle(name: &str) -> VmMetrics {
    VmMetrics::configured(name, RunState::Stopped, 2, 1 << 30)
}

fn running(name: &str) -> VmMetrics {
    VmMetrics {
        state: RunState::Running,
        pid: Some(7),
        uptime_seconds: Some(5),
        cpu: Some(VmCpu {
            seconds_total: 12.345,
            percent: None,
            percent_of_vcpus: None,
            vcpus: vec![VcpuTime {
                index: 1,
                thread_id: 9,
                seconds_total: 4.0,
                percent: None,
            }],
        }),
        memory: Some(VmMemory {
            rss_bytes: 300 << 20,
            rss_percent: 29.296875,
            balloon_actual_bytes: None,
        }),
        disks: vec![DiskIo {
            disk: "disk0".into(),
            read_bytes_total: 1000,
            write_bytes_total: 24,
            read_ops_total: 10,
            write_ops_total: 2,
            read_bytes_per_second: None,
            write_bytes_per_second: None,
            read_ops_per_second: None,
            write_ops_per_second: None,
        }],
        nics: vec![NicIo {
            nic: "nic0".into(),
            source: "guest-agent".into(),
            rx_bytes_total: 500,
            tx_bytes_total: 600,
            rx_packets_total: 5,
            tx_packets_total: 6,
            rx_bytes_per_second: None,
            tx_bytes_per_second: None,
        }],
        ..idle(name)
    }
}

fn report(vms: Vec<VmMetrics>) -> MetricsReport {
    MetricsReport {
        taken_ms: 1,
        interval_ms: None,
        host: HostMetrics {
            cpus: 4,
            cpu_busy_seconds_total: 1.0,
            cpu_idle_seconds_total: 1.0,
            cpu_percent: None,
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            load: [0.0; 3],
            filesystems: vec![FsUsage {
                role: "data".into(),
                path: "/var/lib/corral".into(),
                size_bytes: 100,
                available_bytes: 25,
            }],
        },
        vms,
    }
}

fn layout(name: &str, nic: bool) -> VmLayout {
    VmLayout {
        name: name.into(),
        disks: vec!["disk0".into(), "data".into()],
        nic,
    }
}

fn no_limits(_: &VmMetrics, _: Metric) -> (Option<f64>, Option<f64>) {
    (None, None)
}

/// The (graph, field) names of `multigraph` blocks, for config (`field.attr`) or fetch
/// (`field.value`) text.
fn names(text: &str, config: bool) -> Vec<(String, String)> {
    let mut graph = String::new();
    let mut out = vec![];
    for l in text.lines() {
        if let Some(g) = l.strip_prefix("multigraph ") {
            graph = g.to_string();
            continue;
        }
        if l.starts_with("graph_") {
            assert!(config, "{l}");
            continue;
        }
        let (key, _) = l.split_once(' ').unwrap();
        let (field, attr) = key.split_once('.').unwrap();
        assert!(config || attr == "value", "{l}");
        let pair = (graph.clone(), field.to_string());
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

fn lines_of<'a>(text: &'a str, graph: &str) -> Vec<&'a str> {
    let start = format!("multigraph {graph}");
    text.lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with("multigraph "))
        .collect()
}

#[test]
fn config_and_fetch_name_the_same_graphs_and_fields() {
    let r = report(vec![running("web-1"), idle("db")]);
    let g = graphs(&r, &[layout("web-1", true), layout("db", false)], &no_limits);
    let (c, f) = (config(&g), fetch(&g));
    assert_eq!(names(&c, true), names(&f, false));
    let graphs: Vec<String> = c
        .lines()
        .filter_map(|l| l.strip_prefix("multigraph ").map(str::to_string))
        .collect();
    for want in [
        "corral_vms",
        "corral_vcpus",
        "corral_commit",
        "corral_space",
        "corral_cpu",
        "corral_cpu.web_1",
        "corral_cpu.db",
        "corral_memory.db",
        "corral_disk.web_1",
        "corral_diskops.db",
        "corral_net",
        "corral_net.web_1",
    ] {
        assert!(graphs.iter().any(|g| g == want), "no {want} in {graphs:?}");
    }
    // No overview has a field named like one of its child graphs (munin would mix them up).
    let fields = names(&c, true);
    for child in graphs.iter().filter(|g| g.contains('.')) {
        let (parent, name) = child.split_once('.').unwrap();
        assert!(
            !fields.iter().any(|(g, f)| g == parent && f == name),
            "{parent} has a field {name}"
        );
    }
    // Only web-1 has a NIC the agent counts.
    assert!(!graphs.iter().any(|g| g == "corral_net.db"), "{graphs:?}");
    assert!(c.contains("\nweb_1_cpu.label web-1\n"), "real names in labels:\n{c}");
}

#[test]
fn a_running_vm_has_numbers_and_a_stopped_one_unknowns() {
    let r = report(vec![running("web"), idle("db")]);
    let f = fetch(&graphs(&r, &[layout("web", true), layout("db", true)], &no_limits));
    assert_eq!(
        lines_of(&f, "corral_cpu.web"),
        // 12.345 s over 2 vCPUs: 617 centiseconds each; vCPU 0 was not reported.
        ["cpu.value 617", "vcpu0.value U", "vcpu1.value 400"]
    );
    assert_eq!(
        lines_of(&f, "corral_cpu.db"),
        ["cpu.value U", "vcpu0.value U", "vcpu1.value U"]
    );
    assert_eq!(lines_of(&f, "corral_memory.web"), ["rss.value 29.297"]);
    assert_eq!(lines_of(&f, "corral_memory.db"), ["rss.value U"]);
    assert_eq!(
        lines_of(&f, "corral_disk.web"),
        [
            "disk0_read.value 1000",
            "disk0_write.value 24",
            "data_read.value U",
            "data_write.value U"
        ]
    );
    assert_eq!(
        lines_of(&f, "corral_diskops"),
        [
            "web_read.value 10",
            "web_write.value 2",
            "db_read.value U",
            "db_write.value U"
        ]
    );
    assert_eq!(
        lines_of(&f, "corral_net"),
        [
            "web_received.value 500",
            "web_sent.value 600",
            "db_received.value U",
            "db_sent.value U"
        ]
    );
    assert_eq!(
        lines_of(&f, "corral_vms"),
        [
            "running.value 1",
            "paused.value 0",
            "saved.value 0",
            "crashed.value 0",
            "stopped.value 1"
        ]
    );
    assert_eq!(
        lines_of(&f, "corral_vcpus"),
        ["running.value 2", "defined.value 4", "host.value 4"]
    );
    assert_eq!(lines_of(&f, "corral_space"), ["data.value 75", "backup.value U"]);
}

#[test]
fn counters_are_derive_from_zero_and_pairs_are_negative() {
    let r = report(vec![running("web")]);
    let c = config(&graphs(&r, &[layout("web", true)], &no_limits));
    let cpu = lines_of(&c, "corral_cpu.web");
    for l in ["cpu.type DERIVE", "cpu.min 0", "vcpu1.type DERIVE", "vcpu1.min 0"] {
        assert!(cpu.contains(&l), "{l}: {cpu:?}");
    }
    let disk = lines_of(&c, "corral_disk.web");
    for l in [
        "disk0_read.graph no",
        "disk0_write.negative disk0_read",
        "disk0_write.label disk0",
    ] {
        assert!(disk.contains(&l), "{l}: {disk:?}");
    }
    assert!(lines_of(&c, "corral_memory").contains(&"web_rss.type GAUGE"));
    assert!(lines_of(&c, "corral_memory.web").contains(&"rss.type GAUGE"));
    assert!(lines_of(&c, "corral_memory").contains(&"graph_args --base 1024 -l 0"));
}

#[test]
fn thresholds_become_warning_and_critical_lines() {
    let r = report(vec![running("web"), idle("db")]);
    let limits = |vm: &VmMetrics, m: Metric| match (vm.name.as_str(), m) {
        ("web", Metric::Cpu) => (Some(80.0), Some(95.5)),
        (_, Metric::Memory) => (None, Some(90.0)),
        _ => (None, None),
    };
    let c = config(&graphs(&r, &[], &limits));
    let web = lines_of(&c, "corral_cpu.web");
    assert!(
        web.contains(&"cpu.warning 80") && web.contains(&"cpu.critical 95.5"),
        "{web:?}"
    );
    assert!(!lines_of(&c, "corral_cpu.db").iter().any(|l| l.contains("warning")));
    let mem = lines_of(&c, "corral_memory.db");
    assert!(
        mem.contains(&"rss.critical 90") && !mem.iter().any(|l| l.contains("warning")),
        "{mem:?}"
    );
}

#[test]
fn names_are_cleaned_for_munin_and_kept_apart() {
    assert_eq!(clean_name("web-1.example"), "web_1_example");
    assert_eq!(clean_name("1db"), "_1db");
    assert_eq!(clean_name("graph_x"), "_graph_x");
    assert_eq!(
        clean_unique(["web-1", "web_1", "web.1", "ok"]),
        ["web_1", "web_1_2", "web_1_3", "ok"]
    );
    // No disks known (a VM defined after config was asked): its graphs are empty, not absent.
    let r = report(vec![running("new")]);
    let c = config(&graphs(&r, &[], &no_limits));
    assert!(c.contains("multigraph corral_disk.new\n"));
    assert!(
        !c.contains("multigraph corral_net"),
        "no NIC counted: no network graphs"
    );
}

#[test]
fn numbers_are_plain() {
    assert_eq!(number(29.296875), "29.297");
    assert_eq!(number(80.0), "80");
    assert_eq!(number(0.0001), "0");
    assert_eq!(number(-0.0001), "0");
    assert_eq!(number(1e12), "1000000000000");
}
