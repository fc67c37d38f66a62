//! The munin plugin through the real `munin-run` (munin-node 2.0.73, from Debian's package):
//! `corral munin install` into temporary plugin and conf dirs, then munin-run `autoconf`,
//! `config` and fetch with one booted guest (guest agent, so its NIC is counted) and one
//! stopped VM. munin-run checks no grammar, so the test parses every line itself.

mod common;
#[path = "common/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::Env;

/// munin-run with a throwaway node config, our plugin and conf dirs, and no systemd.
struct Munin {
    node_conf: PathBuf,
    plugins: PathBuf,
    conf_d: PathBuf,
}

impl Munin {
    fn new(dir: &Path) -> Munin {
        let m = Munin {
            node_conf: dir.join("munin-node.conf"),
            plugins: dir.join("plugins"),
            conf_d: dir.join("plugin-conf.d"),
        };
        std::fs::create_dir_all(&m.plugins).unwrap();
        std::fs::create_dir_all(&m.conf_d).unwrap();
        std::fs::write(&m.node_conf, "").unwrap();
        m
    }

    /// `munin-run corral_all [arg]`: (exit code, stdout, stderr without munin-run's harmless
    /// warnings about a missing munin group). Our environment's CORRAL_CONFIG is not passed
    /// on: the plugin must get it from plugin-conf.d, as under munin-node.
    fn run(&self, arg: Option<&str>) -> (i32, String, String) {
        let mut c = tools::munin_run();
        c.arg("--config")
            .arg(&self.node_conf)
            .arg("--servicedir")
            .arg(&self.plugins)
            .arg("--sconfdir")
            .arg(&self.conf_d)
            .arg("--ignore-systemd-properties")
            .arg("corral_all")
            .args(arg)
            .env_remove("CORRAL_CONFIG")
            .env_remove("MUNIN_CAP_MULTIGRAPH");
        let out = c.output().expect("run munin-run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| !l.contains("uninitialized value")).collect();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            ours.join("\n"),
        )
    }

    /// A run that exits 0 with nothing on stderr; its stdout.
    fn ok(&self, arg: Option<&str>) -> String {
        let (rc, out, err) = self.run(arg);
        assert!(
            rc == 0 && err.is_empty(),
            "munin-run {arg:?} exit {rc}:\n{out}\nstderr: {err}"
        );
        out
    }
}

/// A graph as `config` describes it: its attributes and each field's, in order.
#[derive(Debug, Default)]
struct ConfigGraph {
    attrs: BTreeMap<String, String>,
    fields: Vec<(String, BTreeMap<String, String>)>,
}

fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn graph_name(line: &str) -> Option<String> {
    let name = line.strip_prefix("multigraph ")?;
    let parts: Vec<&str> = name.split('.').collect();
    assert!(
        parts.len() <= 2 && parts.iter().all(|p| is_name(p)),
        "bad graph name {name:?}"
    );
    Some(name.to_string())
}

/// Parses `config` output, checking every line's grammar: `multigraph X`, `graph_* value`,
/// `field.attr value`; fields have a label and a type; DERIVE fields `min 0`; a `negative`
/// names a field of the same graph; levels are numbers; a child graph's parent comes first.
fn parse_config(text: &str) -> Vec<(String, ConfigGraph)> {
    const GRAPH_ATTRS: [&str; 5] = [
        "graph_title",
        "graph_vlabel",
        "graph_category",
        "graph_args",
        "graph_info",
    ];
    const FIELD_ATTRS: [&str; 10] = [
        "label", "type", "min", "max", "draw", "graph", "negative", "info", "warning", "critical",
    ];
    let mut graphs: Vec<(String, ConfigGraph)> = vec![];
    for line in text.lines() {
        if let Some(name) = graph_name(line) {
            if let Some((parent, _)) = name.split_once('.') {
                assert!(graphs.iter().any(|(g, _)| g == parent), "{name} before its parent");
            }
            assert!(!graphs.iter().any(|(g, _)| *g == name), "{name} twice");
            graphs.push((name, ConfigGraph::default()));
            continue;
        }
        let (_, g) = graphs
            .last_mut()
            .unwrap_or_else(|| panic!("{line:?} before any multigraph"));
        let (key, value) = line.split_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(!value.trim().is_empty(), "empty value: {line:?}");
        if key.starts_with("graph_") {
            assert!(GRAPH_ATTRS.contains(&key), "unknown graph attribute: {line:?}");
            assert!(g.attrs.insert(key.into(), value.into()).is_none(), "twice: {line:?}");
            continue;
        }
        let (field, attr) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("not field.attr: {line:?}"));
        assert!(is_name(field), "bad field name: {line:?}");
        assert!(FIELD_ATTRS.contains(&attr), "unknown field attribute: {line:?}");
        if !g.fields.iter().any(|(f, _)| f == field) {
            g.fields.push((field.to_string(), BTreeMap::new()));
        }
        let f = &mut g.fields.iter_mut().find(|(f, _)| f == field).unwrap().1;
        assert!(f.insert(attr.into(), value.into()).is_none(), "twice: {line:?}");
    }
    for (name, g) in &graphs {
        for a in ["graph_title", "graph_vlabel", "graph_category"] {
            assert!(g.attrs.contains_key(a), "{name} has no {a}");
        }
        for (field, attrs) in &g.fields {
            assert!(attrs.contains_key("label"), "{name}/{field} has no label");
            match attrs.get("type").map(String::as_str) {
                Some("GAUGE") => {}
                Some("DERIVE") => assert_eq!(attrs.get("min").map(String::as_str), Some("0"), "{name}/{field}"),
                other => panic!("{name}/{field}: type {other:?}"),
            }
            if let Some(n) = attrs.get("negative") {
                let other = g.fields.iter().find(|(f, _)| f == n);
                assert!(other.is_some_and(|(_, a)| a.get("graph").map(String::as_str) == Some("no")));
            }
            for level in ["warning", "critical"] {
                if let Some(v) = attrs.get(level) {
                    v.parse::<f64>()
                        .unwrap_or_else(|_| panic!("{name}/{field}.{level} {v}"));
                }
            }
        }
    }
    graphs
}

/// Fetched values: graph → (field, value; `None` for U), in order.
type Fetched = Vec<(String, Vec<(String, Option<f64>)>)>;

/// Parses fetch output (`multigraph X`, `field.value N|U`): graph → field → value (`None`: U).
fn parse_fetch(text: &str) -> Fetched {
    let mut graphs: Fetched = vec![];
    for line in text.lines() {
        if let Some(name) = graph_name(line) {
            graphs.push((name, vec![]));
            continue;
        }
        let (_, fields) = graphs
            .last_mut()
            .unwrap_or_else(|| panic!("{line:?} before any multigraph"));
        let (key, value) = line.split_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let field = key
            .strip_suffix(".value")
            .unwrap_or_else(|| panic!("not field.value: {line:?}"));
        assert!(is_name(field), "bad field name: {line:?}");
        let v = match value {
            "U" => None,
            v => Some(v.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line:?}"))),
        };
        fields.push((field.to_string(), v));
    }
    graphs
}

fn value(fetch: &Fetched, graph: &str, field: &str) -> Option<f64> {
    let (_, fields) = fetch
        .iter()
        .find(|(g, _)| g == graph)
        .unwrap_or_else(|| panic!("no graph {graph}"));
    fields
        .iter()
        .find(|(f, _)| f == field)
        .unwrap_or_else(|| panic!("no field {graph}/{field}"))
        .1
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn munin_run_reads_the_plugin_corral_installs() {
    // An alert rule gives munin a level the plugin's environment does not set.
    let env = Env::with_config(
        "[[alert]]\nname = \"rss\"\nmetric = \"memory\"\nabove = \"99%\"\nvms = [\"up\"]\nseverity = \"critical\"\n",
    );
    let g = common::guest();
    env.create_guest_from("up", &g.kernel, &g.initrd_qga, "", &["--guest-agent"]);
    env.ok(&["vm", "start", "up"]);
    env.wait_ready("up", 1);
    env.create_guest("down", "");
    let m = Munin::new(&env.dir_path().join("munin"));
    let (pd, cd) = (m.plugins.to_str().unwrap(), m.conf_d.to_str().unwrap());

    // Install: the link, the conf (root, and our config since it is not the default), and
    // what to run next; a second install changes nothing.
    let said = env.ok(&["munin", "install", "--plugin-dir", pd, "--conf-dir", cd]);
    eprintln!("--- corral munin install:\n{said}");
    assert!(
        said.contains("linked") && said.contains("munin-run corral_all"),
        "{said}"
    );
    let link = m.plugins.join("corral_all");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from(env!("CARGO_BIN_EXE_corral"))
    );
    let conf = std::fs::read_to_string(m.conf_d.join("corral")).unwrap();
    assert!(conf.contains("[corral_*]\nuser root\n"), "{conf}");
    assert!(
        conf.contains(&format!("env.CORRAL_CONFIG {}", env.config.display())),
        "{conf}"
    );
    let again = env.json(&["munin", "install", "--plugin-dir", pd, "--conf-dir", cd]);
    assert_eq!(
        (again["plugin_changed"].as_bool(), again["conf_changed"].as_bool()),
        (Some(false), Some(false))
    );
    let missing = env.fails(&[
        "munin",
        "install",
        "--plugin-dir",
        "/nonexistent/plugins",
        "--conf-dir",
        cd,
    ]);
    assert!(missing.contains("/nonexistent/plugins does not exist"), "{missing}");

    // Alert levels for the plugin (until the alert rules feed them).
    std::fs::write(
        m.conf_d.join("corral-levels"),
        "[corral_all]\nenv.cpu_warning 80\nenv.cpu_critical 95\nenv.memory_warning 90\n",
    )
    .unwrap();

    assert_eq!(m.ok(Some("autoconf")), "yes\n");
    // Run by hand, without munin: autoconf says why not, fetch refuses.
    let direct = std::process::Command::new(&link)
        .arg("autoconf")
        .env("CORRAL_CONFIG", &env.config)
        .env_remove("MUNIN_CAP_MULTIGRAPH")
        .output()
        .unwrap();
    assert!(direct.status.success());
    assert!(
        text(&direct).starts_with("no (") && text(&direct).contains("MUNIN_CAP_MULTIGRAPH"),
        "{}",
        text(&direct)
    );
    let direct = std::process::Command::new(&link)
        .env("CORRAL_CONFIG", &env.config)
        .env_remove("MUNIN_CAP_MULTIGRAPH")
        .output()
        .unwrap();
    assert!(
        !direct.status.success() && text(&direct).contains("multigraph"),
        "{}",
        text(&direct)
    );

    // The guest's NIC gets an address, so that its agent reports counters.
    let mut con = env.console("up");
    con.ok("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0");

    let config_text = m.ok(Some("config"));
    let fetch_text = m.ok(None);
    eprintln!(
        "--- munin-run corral_all config ({} lines):",
        config_text.lines().count()
    );
    eprintln!("{config_text}");
    eprintln!("--- munin-run corral_all ({} lines):", fetch_text.lines().count());
    eprintln!("{fetch_text}");
    let config = parse_config(&config_text);
    let fetch = parse_fetch(&fetch_text);

    // Config and fetch name the same graphs and fields, in the same order.
    let from_config: Vec<(String, Vec<String>)> = config
        .iter()
        .map(|(g, c)| (g.clone(), c.fields.iter().map(|(f, _)| f.clone()).collect()))
        .collect();
    let from_fetch: Vec<(String, Vec<String>)> = fetch
        .iter()
        .map(|(g, f)| (g.clone(), f.iter().map(|(f, _)| f.clone()).collect()))
        .collect();
    assert_eq!(from_config, from_fetch);
    let names: Vec<&str> = config.iter().map(|(g, _)| g.as_str()).collect();
    for want in [
        "corral_vms",
        "corral_vcpus",
        "corral_commit",
        "corral_cpu",
        "corral_cpu.up",
        "corral_cpu.down",
        "corral_memory.up",
        "corral_disk.up",
        "corral_diskops.down",
        "corral_net",
        "corral_net.up",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
    assert!(
        !names.contains(&"corral_net.down"),
        "down has no agent: no NIC counters"
    );

    // The levels from plugin-conf.d, on CPU and memory of every VM.
    let attr = |graph: &str, field: &str, a: &str| {
        let (_, g) = config.iter().find(|(n, _)| n == graph).unwrap();
        g.fields.iter().find(|(f, _)| f == field).unwrap().1.get(a).cloned()
    };
    for vm in ["up", "down"] {
        assert_eq!(
            attr(&format!("corral_cpu.{vm}"), "cpu", "warning").as_deref(),
            Some("80")
        );
        assert_eq!(
            attr(&format!("corral_cpu.{vm}"), "cpu", "critical").as_deref(),
            Some("95")
        );
        assert_eq!(
            attr(&format!("corral_memory.{vm}"), "rss", "warning").as_deref(),
            Some("90")
        );
    }
    assert_eq!(attr("corral_memory.up", "rss", "critical").as_deref(), Some("99"));
    assert_eq!(
        attr("corral_memory.down", "rss", "critical"),
        None,
        "the rule watches `up` only"
    );
    assert_eq!(
        attr("corral_disk.up", "disk0_write", "negative").as_deref(),
        Some("disk0_read")
    );

    // The running VM has numbers, the stopped one unknowns everywhere.
    for (graph, field) in [
        ("corral_cpu.up", "cpu"),
        ("corral_cpu.up", "vcpu0"),
        ("corral_memory.up", "rss"),
        ("corral_disk.up", "disk0_read"),
        ("corral_diskops.up", "disk0_write"),
        ("corral_cpu", "up_cpu"),
        ("corral_memory", "up_rss"),
        ("corral_net.up", "nic0_sent"),
    ] {
        assert!(value(&fetch, graph, field).is_some(), "{graph}/{field} is U");
    }
    for (graph, fields) in &fetch {
        if graph.ends_with(".down") {
            assert!(fields.iter().all(|(_, v)| v.is_none()), "{graph}: {fields:?}");
        }
    }
    assert_eq!(value(&fetch, "corral_cpu", "down_cpu"), None);
    assert_eq!(value(&fetch, "corral_vms", "running"), Some(1.0));
    assert_eq!(value(&fetch, "corral_vms", "stopped"), Some(1.0));
    assert_eq!(
        value(&fetch, "corral_commit", "defined"),
        Some((2u64 * (192 << 20)) as f64)
    );

    // The guest reads its disk and sends packets: the counters grow.
    con.ok("dd if=/dev/vda of=/dev/null bs=64k count=256 iflag=direct 2>/dev/null");
    con.run("ping -c 3 -W 1 10.0.2.2");
    let later = parse_fetch(&m.ok(None));
    for (graph, field) in [
        ("corral_disk.up", "disk0_read"),
        ("corral_diskops.up", "disk0_read"),
        ("corral_cpu.up", "cpu"),
        ("corral_net.up", "nic0_sent"),
    ] {
        let (a, b) = (
            value(&fetch, graph, field).unwrap(),
            value(&later, graph, field).unwrap(),
        );
        assert!(b > a, "{graph}/{field} did not grow: {a} then {b}");
    }

    // Uninstall removes both; a second one finds nothing.
    let said = env.ok(&["munin", "uninstall", "--plugin-dir", pd, "--conf-dir", cd]);
    assert!(said.contains("removed"), "{said}");
    assert!(std::fs::symlink_metadata(&link).is_err() && !m.conf_d.join("corral").exists());
    let said = env.json(&["munin", "uninstall", "--plugin-dir", pd, "--conf-dir", cd]);
    assert_eq!(said["plugin_removed"], false);
    let (rc, _, err) = m.run(None);
    assert!(rc != 0 && err.contains("Unknown service 'corral_all'"), "{rc} {err}");
}
