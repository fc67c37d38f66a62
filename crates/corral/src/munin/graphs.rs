//! The munin plugin's graphs, as data: [`graphs`] turns one sample into multigraphs, and
//! [`config`] and [`fetch`] print them. Both print from the same list, so they always name the
//! same graphs and fields. Pure functions, tested below.
//!
//! Families: `corral_vms` (VMs by state), `corral_vcpus` and `corral_commit` (what VMs are
//! given against what the host has), `corral_space`, then per resource an overview with one
//! field per VM and a child graph per VM (`corral_cpu.web1`): `corral_cpu`, `corral_memory`,
//! `corral_disk` (bytes), `corral_diskops`, and `corral_net` for VMs whose NIC counters the
//! guest agent can give. An overview's fields are named after the VM with a suffix
//! (`web1_cpu`, `web1_read`), never exactly like a child graph. Every defined VM has its graphs; while it has no QEMU process its
//! values are `U`. Counters are `DERIVE` with `min 0`: a new QEMU process starts them again
//! from 0, which munin then records as unknown instead of a spike.

use std::collections::HashSet;
use std::fmt::Write as _;

use corral_types::{ByteSize, Metric, MetricsReport, RunState, VmMetrics};

/// What the spec says about a VM's devices: fixed between `config` and fetch, unlike what a
/// sample finds (a stopped VM reports no disks).
#[derive(Debug, Clone, Default)]
pub struct VmLayout {
    pub name: String,
    /// The disks' names (`disk0`, `data`, …).
    pub disks: Vec<String>,
    /// Whether the guest agent can count the NIC's traffic (agent on, a network).
    pub nic: bool,
}

/// Warning and critical levels of a VM's metric, in the metric's unit (see `super::thresholds`).
pub type Limits<'a> = &'a dyn Fn(&VmMetrics, Metric) -> (Option<f64>, Option<f64>);

/// A value to fetch: counters are integers (munin's DERIVE wants them); `None` is `U`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Real(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub attrs: Vec<(&'static str, String)>,
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// `corral_cpu`, or `corral_cpu.web1` for a child.
    pub name: String,
    pub attrs: Vec<(&'static str, String)>,
    pub fields: Vec<Field>,
}

/// A name as munin wants field and graph names: letters, digits and `_`, not starting with a
/// digit, nor with `graph` (munin's own attribute names).
pub fn clean_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) || out.starts_with("graph") {
        out.insert(0, '_');
    }
    out
}

/// Clean names for a list, made unique in order (`web_1` and `web-1` → `web_1`, `web_1_2`).
fn clean_unique<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken = HashSet::new();
    names
        .into_iter()
        .map(|n| {
            let base = clean_name(n);
            let mut name = base.clone();
            let mut i = 2;
            while !taken.insert(name.clone()) {
                name = format!("{base}_{i}");
                i += 1;
            }
            name
        })
        .collect()
}

fn field(name: impl Into<String>, label: impl Into<String>, kind: &str, value: Option<Value>) -> Field {
    let mut attrs = vec![("label", label.into()), ("type", kind.to_string())];
    if kind == "DERIVE" {
        attrs.push(("min", "0".into()));
    }
    Field {
        name: name.into(),
        attrs,
        value,
    }
}

impl Field {
    fn with(mut self, key: &'static str, value: impl Into<String>) -> Field {
        self.attrs.push((key, value.into()));
        self
    }

    fn limits(mut self, (warning, critical): (Option<f64>, Option<f64>)) -> Field {
        for (key, v) in [("warning", warning), ("critical", critical)] {
            if let Some(v) = v {
                self.attrs.push((key, number(v)));
            }
        }
        self
    }
}

fn graph(
    name: impl Into<String>,
    title: impl Into<String>,
    vlabel: &str,
    args: &str,
    info: impl Into<String>,
) -> Graph {
    Graph {
        name: name.into(),
        attrs: vec![
            ("graph_title", title.into()),
            ("graph_vlabel", vlabel.to_string()),
            ("graph_category", "virtualization".to_string()),
            ("graph_args", args.to_string()),
            ("graph_info", info.into()),
        ],
        fields: vec![],
    }
}

const BYTES: &str = "--base 1024 -l 0";
const COUNT: &str = "--base 1000 -l 0";

/// A float as munin reads it: no exponent, at most 3 decimals.
fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Centiseconds of CPU time: as a DERIVE, a percentage of one CPU.
fn centi(seconds: f64) -> Value {
    Value::Int((seconds * 100.0).round().max(0.0) as u64)
}

/// A read/write (or receive/send) pair on one graph: the first below the axis, the second
/// above it, labelled once.
fn pair(prefix: &str, label: &str, below: (&str, Option<u64>), above: (&str, Option<u64>)) -> [Field; 2] {
    let low = format!("{prefix}_{}", below.0);
    [
        field(&low, format!("{label} {}", below.0), "DERIVE", below.1.map(Value::Int)).with("graph", "no"),
        field(
            format!("{prefix}_{}", above.0),
            label,
            "DERIVE",
            above.1.map(Value::Int),
        )
        .with("negative", low)
        .with("info", format!("{} below the axis, {} above", below.0, above.0)),
    ]
}

/// Every graph for one sample. `layout` gives each VM's disks and NIC (by name; a VM missing
/// from it gets none); `limits` gives the warning and critical levels of CPU and memory.
pub fn graphs(report: &MetricsReport, layout: &[VmLayout], limits: Limits) -> Vec<Graph> {
    let vms = &report.vms;
    let names = clean_unique(vms.iter().map(|v| v.name.as_str()));
    let empty = VmLayout::default();
    let layout_of = |v: &VmMetrics| layout.iter().find(|l| l.name == v.name).unwrap_or(&empty);
    let mut out = host_graphs(report);

    // CPU: the overview in % of one host CPU, stacked; each VM's graph in % of its vCPUs.
    let mut cpu = graph(
        "corral_cpu",
        "corral VMs: CPU",
        "% of one host CPU",
        COUNT,
        format!(
            "CPU time of each VM's QEMU process (all threads); the host has {} CPUs (= {}%).",
            report.host.cpus,
            report.host.cpus * 100
        ),
    );
    let mut children = vec![];
    for (v, n) in vms.iter().zip(&names) {
        let secs = v.cpu.as_ref().map(|c| c.seconds_total);
        // Not named like the child graph (`corral_cpu.NAME`): munin would mix the two up.
        cpu.fields
            .push(field(format!("{n}_cpu"), &v.name, "DERIVE", secs.map(centi)).with("draw", "AREASTACK"));
        let mut g = graph(
            format!("corral_cpu.{n}"),
            format!("{}: CPU", v.name),
            "%",
            COUNT,
            format!(
                "{} has {} vCPU{}; 100% = all busy.",
                v.name,
                v.vcpus,
                if v.vcpus == 1 { "" } else { "s" }
            ),
        );
        let vcpus = v.vcpus.max(1) as f64;
        g.fields.push(
            field("cpu", "all vCPUs", "DERIVE", secs.map(|s| centi(s / vcpus)))
                .with(
                    "info",
                    "QEMU's CPU time (vCPUs, I/O and emulation) as % of the VM's vCPUs",
                )
                .limits(limits(v, Metric::Cpu)),
        );
        for i in 0..v.vcpus {
            let t = v.cpu.as_ref().and_then(|c| c.vcpus.iter().find(|t| t.index == i));
            g.fields.push(field(
                format!("vcpu{i}"),
                format!("vCPU {i}"),
                "DERIVE",
                t.map(|t| centi(t.seconds_total)),
            ));
        }
        children.push(g);
    }
    out.push(cpu);
    out.append(&mut children);

    // Memory: resident bytes stacked; each VM's graph in % of its configured memory.
    let mut mem = graph(
        "corral_memory",
        "corral VMs: resident memory",
        "bytes",
        BYTES,
        "Resident memory of each VM's QEMU process.",
    );
    for (v, n) in vms.iter().zip(&names) {
        let rss = v.memory.as_ref().map(|m| Value::Int(m.rss_bytes));
        mem.fields
            .push(field(format!("{n}_rss"), &v.name, "GAUGE", rss).with("draw", "AREASTACK"));
        let mut g = graph(
            format!("corral_memory.{n}"),
            format!("{}: memory", v.name),
            "% of configured",
            "--base 1000 -l 0 --upper-limit 100",
            format!(
                "Resident memory of {}'s QEMU process, % of its configured {}.",
                v.name,
                ByteSize(v.memory_bytes).approx()
            ),
        );
        g.fields.push(
            field(
                "rss",
                "resident",
                "GAUGE",
                v.memory.as_ref().map(|m| Value::Real(m.rss_percent)),
            )
            .limits(limits(v, Metric::Memory)),
        );
        children.push(g);
    }
    out.push(mem);
    out.append(&mut children);

    // Disks: bytes and operations, reads below the axis and writes above.
    for (family, what, unit) in [
        ("corral_disk", "disk I/O", "bytes per second"),
        ("corral_diskops", "disk operations", "operations per second"),
    ] {
        let bytes = family == "corral_disk";
        let mut top = graph(
            family,
            format!("corral VMs: {what}"),
            &format!("{unit} read (-) / written (+)"),
            if bytes { BYTES } else { COUNT },
            "What each VM's guest read and wrote, over all its disks, as QEMU counts it.",
        );
        for (v, n) in vms.iter().zip(&names) {
            let live = v.pid.is_some();
            let sum = |f: &dyn Fn(&corral_types::DiskIo) -> u64| live.then(|| v.disks.iter().map(f).sum::<u64>());
            let (r, w) = if bytes {
                (sum(&|d| d.read_bytes_total), sum(&|d| d.write_bytes_total))
            } else {
                (sum(&|d| d.read_ops_total), sum(&|d| d.write_ops_total))
            };
            top.fields.extend(pair(n, &v.name, ("read", r), ("write", w)));
            let mut g = graph(
                format!("{family}.{n}"),
                format!("{}: {what}", v.name),
                &format!("{unit} read (-) / written (+)"),
                if bytes { BYTES } else { COUNT },
                format!("Each disk of {}, as QEMU counts the guest's requests.", v.name),
            );
            let disks = &layout_of(v).disks;
            for (d, dn) in disks.iter().zip(clean_unique(disks.iter().map(String::as_str))) {
                let io = v.disks.iter().find(|x| &x.disk == d).filter(|_| live);
                let (r, w) = match io {
                    Some(io) if bytes => (Some(io.read_bytes_total), Some(io.write_bytes_total)),
                    Some(io) => (Some(io.read_ops_total), Some(io.write_ops_total)),
                    None => (None, None),
                };
                g.fields.extend(pair(&dn, d, ("read", r), ("write", w)));
            }
            children.push(g);
        }
        out.push(top);
        out.append(&mut children);
    }

    // Network: only VMs whose guest agent can count (user-mode networking has no host-side
    // counters); received below the axis, sent above.
    let with_nic: Vec<(&VmMetrics, &String)> = vms.iter().zip(&names).filter(|(v, _)| layout_of(v).nic).collect();
    if !with_nic.is_empty() {
        let mut top = graph(
            "corral_net",
            "corral VMs: network",
            "bytes per second received (-) / sent (+)",
            BYTES,
            "Traffic of each VM's NIC as its guest agent counts it.",
        );
        for (v, n) in with_nic {
            let nic = v.nics.first().filter(|_| v.pid.is_some());
            top.fields.extend(pair(
                n,
                &v.name,
                ("received", nic.map(|x| x.rx_bytes_total)),
                ("sent", nic.map(|x| x.tx_bytes_total)),
            ));
            let mut g = graph(
                format!("corral_net.{n}"),
                format!("{}: network", v.name),
                "packets per second received (-) / sent (+)",
                COUNT,
                format!("Packets of {}'s NIC as its guest agent counts them.", v.name),
            );
            g.fields.extend(pair(
                "nic0",
                "nic0",
                ("received", nic.map(|x| x.rx_packets_total)),
                ("sent", nic.map(|x| x.tx_packets_total)),
            ));
            children.push(g);
        }
        out.push(top);
        out.append(&mut children);
    }
    out
}

/// The host's side: VMs by state, vCPUs and memory given against what the host has, and the
/// space left where corral keeps data and backups.
fn host_graphs(report: &MetricsReport) -> Vec<Graph> {
    let vms = &report.vms;
    let h = &report.host;
    let mut states = graph(
        "corral_vms",
        "corral VMs by state",
        "VMs",
        COUNT,
        "How many of the defined VMs are in each state.",
    );
    for s in [
        RunState::Running,
        RunState::Paused,
        RunState::Saved,
        RunState::Crashed,
        RunState::Stopped,
    ] {
        let n = vms.iter().filter(|v| v.state == s).count() as u64;
        states
            .fields
            .push(field(s.as_str(), s.as_str(), "GAUGE", Some(Value::Int(n))).with("draw", "AREASTACK"));
    }

    let active = |v: &&VmMetrics| v.state.is_active();
    let sum = |f: &dyn Fn(&VmMetrics) -> u64, only_active: bool| -> u64 {
        vms.iter().filter(|v| !only_active || active(v)).map(f).sum()
    };
    let mut vcpus = graph(
        "corral_vcpus",
        "corral: vCPUs given against host CPUs",
        "CPUs",
        COUNT,
        "vCPUs of the VMs that run (and of all defined VMs) against the host's logical CPUs.",
    );
    vcpus.fields = vec![
        field(
            "running",
            "vCPUs of running VMs",
            "GAUGE",
            Some(Value::Int(sum(&|v| v.vcpus as u64, true))),
        )
        .with("draw", "AREA"),
        field(
            "defined",
            "vCPUs of all VMs",
            "GAUGE",
            Some(Value::Int(sum(&|v| v.vcpus as u64, false))),
        ),
        field("host", "host CPUs", "GAUGE", Some(Value::Int(h.cpus as u64))),
    ];
    let mut commit = graph(
        "corral_commit",
        "corral: memory given against host memory",
        "bytes",
        BYTES,
        "Memory configured for the VMs that run (and for all), what their QEMU processes hold, and the host's.",
    );
    commit.fields = vec![
        field(
            "running",
            "configured, running VMs",
            "GAUGE",
            Some(Value::Int(sum(&|v| v.memory_bytes, true))),
        )
        .with("draw", "AREA"),
        field(
            "resident",
            "resident, all QEMU",
            "GAUGE",
            Some(Value::Int(sum(&|v| v.memory.as_ref().map_or(0, |m| m.rss_bytes), true))),
        ),
        field(
            "defined",
            "configured, all VMs",
            "GAUGE",
            Some(Value::Int(sum(&|v| v.memory_bytes, false))),
        ),
        field("host", "host memory", "GAUGE", Some(Value::Int(h.memory_total_bytes))),
        field(
            "available",
            "host memory available",
            "GAUGE",
            Some(Value::Int(h.memory_available_bytes)),
        ),
    ];
    let mut space = graph(
        "corral_space",
        "corral: space used",
        "%",
        "--base 1000 -l 0 --upper-limit 100",
        "Space used on the file systems of the data dir and of the backup store.",
    );
    for role in ["data", "backup"] {
        let fs = h.filesystems.iter().find(|f| f.role == role);
        let mut f = field(role, role, "GAUGE", fs.map(|f| Value::Real(f.used_percent())));
        if let Some(fs) = fs {
            f = f.with("info", fs.path.replace('\n', " "));
        }
        space.fields.push(f);
    }
    vec![states, vcpus, commit, space]
}

/// `config`: every graph's attributes and fields.
pub fn config(graphs: &[Graph]) -> String {
    let mut out = String::new();
    for g in graphs {
        let _ = writeln!(out, "multigraph {}", g.name);
        for (k, v) in &g.attrs {
            let _ = writeln!(out, "{k} {}", one_line(v));
        }
        for f in &g.fields {
            for (k, v) in &f.attrs {
                let _ = writeln!(out, "{}.{k} {}", f.name, one_line(v));
            }
        }
    }
    out
}

/// Fetch: every field's value, `U` when unknown.
pub fn fetch(graphs: &[Graph]) -> String {
    let mut out = String::new();
    for g in graphs {
        let _ = writeln!(out, "multigraph {}", g.name);
        for f in &g.fields {
            let v = match f.value {
                Some(Value::Int(i)) => i.to_string(),
                Some(Value::Real(r)) if r.is_finite() => number(r),
                _ => "U".to_string(),
            };
            let _ = writeln!(out, "{}.value {v}", f.name);
        }
    }
    out
}

/// Munin's protocol is line-based: a value never spans lines.
fn one_line(v: &str) -> String {
    v.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
