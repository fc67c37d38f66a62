//! `GET /metrics` checked by the real `promtool check metrics` (Prometheus 2.42, from Debian's
//! package), and by our own parser for what promtool does not check (docs/dev/metrics-research.md
//! §5): families contiguous, HELP and TYPE once per family, no duplicate series, counters
//! finite and non-negative. In-process server, one booted guest and one stopped VM with a
//! backup, a viewer token.

mod common;
#[path = "common/http.rs"]
mod http;
#[path = "common/tools.rs"]
mod tools;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Env;
use http::{http, start_server};

/// One sample line: the metric name, its labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: families (HELP, TYPE) in order, and samples in order.
#[derive(Debug, Default)]
struct Exposition {
    help: HashMap<String, String>,
    kind: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }
}

/// `Err(message)` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Parses `name{k="v",…} value` with the text format's escapes.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let c: Vec<char> = line.chars().collect();
    let mut i = 0;
    let word = |i: &mut usize, ok: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < c.len() && ok(c[*i]) {
            *i += 1;
        }
        c[start..*i].iter().collect::<String>()
    };
    let name = word(&mut i, &|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':');
    ensure!(
        !name.is_empty() && !name.starts_with(|ch: char| ch.is_ascii_digit()),
        "bad metric name in {line:?}"
    );
    let mut labels = BTreeMap::new();
    if c.get(i) == Some(&'{') {
        i += 1;
        while c.get(i) != Some(&'}') {
            let key = word(&mut i, &|ch| ch.is_ascii_alphanumeric() || ch == '_');
            ensure!(!key.is_empty(), "bad label name in {line:?}");
            ensure!(
                c.get(i) == Some(&'=') && c.get(i + 1) == Some(&'"'),
                "no =\" after {key}: {line:?}"
            );
            i += 2;
            let mut value = String::new();
            loop {
                match (c.get(i), c.get(i + 1)) {
                    (Some('\\'), Some('\\')) => value.push('\\'),
                    (Some('\\'), Some('"')) => value.push('"'),
                    (Some('\\'), Some('n')) => value.push('\n'),
                    (Some('\\'), other) => return Err(format!("bad escape {other:?} in {line:?}")),
                    (Some('"'), _) => break,
                    (None, _) => return Err(format!("unterminated label value in {line:?}")),
                    (Some(ch), _) => {
                        value.push(*ch);
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            }
            i += 1;
            ensure!(
                labels.insert(key.clone(), value).is_none(),
                "label {key} twice: {line:?}"
            );
            match c.get(i) {
                Some(',') if c.get(i + 1) != Some(&'}') => i += 1,
                Some('}') => {}
                _ => return Err(format!("bad labels after {key}: {line:?}")),
            }
        }
        i += 1;
    }
    ensure!(c.get(i) == Some(&' '), "no value: {line:?}");
    let value_text: String = c[i + 1..].iter().collect();
    ensure!(
        !value_text.contains(' '),
        "a timestamp or junk after the value: {line:?}"
    );
    let value = match value_text.as_str() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
    };
    Ok(Sample { name, labels, value })
}

/// Parses and checks what promtool 2.42 lets pass: one HELP and one TYPE per family, both
/// before its samples; a family's samples in one contiguous run; no series twice; counters
/// finite and non-negative; every sample in a family with HELP and TYPE; a final newline.
fn check(text: &str) -> Result<Exposition, String> {
    ensure!(text.ends_with('\n'), "no final newline");
    let mut e = Exposition::default();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (what, rest) = rest.split_once(' ').ok_or(format!("bad comment {line:?}"))?;
            let (name, body) = rest.split_once(' ').ok_or(format!("bad comment {line:?}"))?;
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                ensure!(
                    !finished.contains(name),
                    "family {name} comes back after other families"
                );
                current = Some(name.to_string());
            }
            let map = match what {
                "HELP" => &mut e.help,
                "TYPE" => &mut e.kind,
                other => return Err(format!("unknown comment {other}")),
            };
            ensure!(
                map.insert(name.to_string(), body.to_string()).is_none(),
                "{what} twice for {name}"
            );
            ensure!(
                !e.samples.iter().any(|s| s.name == name),
                "{what} of {name} after its samples"
            );
            continue;
        }
        ensure!(!line.starts_with('#') && !line.is_empty(), "stray line {line:?}");
        let s = parse_sample(line)?;
        ensure!(
            current.as_deref() == Some(s.name.as_str()),
            "sample outside its family (not contiguous, or no HELP/TYPE): {line:?}"
        );
        ensure!(
            e.help.contains_key(&s.name) && e.kind.contains_key(&s.name),
            "{} lacks HELP or TYPE",
            s.name
        );
        if e.kind[&s.name] == "counter" {
            ensure!(s.name.ends_with("_total"), "counter {} without _total", s.name);
            ensure!(
                s.value.is_finite() && s.value >= 0.0,
                "counter below 0 or not finite: {line:?}"
            );
        }
        ensure!(
            series.insert((s.name.clone(), s.labels.clone())),
            "series twice: {line:?}"
        );
        e.samples.push(s);
    }
    for (name, kind) in &e.kind {
        ensure!(e.help.contains_key(name), "{name} has TYPE but no HELP");
        ensure!(["counter", "gauge"].contains(&kind.as_str()), "{name}: {kind}");
    }
    Ok(e)
}

fn parse_and_check(text: &str) -> Exposition {
    check(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs `promtool check metrics` on the text; its exit status and everything it printed.
fn promtool(text: &str) -> (i32, String) {
    let mut child = Command::new(tools::promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), said)
}

#[test]
fn our_parser_catches_what_promtool_lets_pass() {
    // Our checks can fail: the first three of these pass promtool 2.42 (research notes §5).
    let bad = [
        (
            "# HELP a_total x\n# TYPE a_total counter\na_total{v=\"1\"} 1\n# HELP b x\n# TYPE b gauge\nb 1\na_total{v=\"2\"} 1\n",
            "outside its family",
        ),
        ("# HELP a x\n# TYPE a gauge\na 1\na 1\n", "series twice"),
        ("# HELP a_total x\n# TYPE a_total counter\na_total -1\n", "counter below 0"),
        ("# TYPE a gauge\na 1\n", "lacks HELP"),
        ("# HELP a x\n# TYPE a gauge\na 1\n# HELP a y\n", "HELP twice"),
        ("# HELP a x\n# TYPE a gauge\na 1", "no final newline"),
    ];
    for (text, why) in bad {
        let e = check(text).err().unwrap_or_else(|| panic!("not caught: {text:?}"));
        assert!(e.contains(why), "{text:?}: {e}");
    }
    let ok = parse_and_check("# HELP a x\n# TYPE a gauge\na{p=\"q\\\"\\\\\\n\",z=\"\"} 1.5\n");
    assert_eq!(ok.value("a", &[("p", "q\"\\\n"), ("z", "")]), 1.5);
}

#[test]
fn metrics_pass_promtool_and_say_what_the_host_runs() {
    let env = Env::new();
    // A store path with a quote, a backslash and a newline: its label must be escaped.
    let store = env.dir_path().join("st \"q\" \\b\nx");
    let toml_store = store
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let mut cfg = std::fs::OpenOptions::new().append(true).open(&env.config).unwrap();
    writeln!(cfg, "[metrics]\ninterval = \"1s\"\n[backup]\nstore = \"{toml_store}\"").unwrap();
    drop(cfg);
    env.boot_guest("up", "");
    env.create_guest("down", "");
    env.ok(&["backup", "run", "down"]);
    let viewer = env
        .ok(&["token", "create", "--role", "viewer", "--label", "prometheus"])
        .trim()
        .to_string();
    let before_scrape = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let addr = start_server(&env);

    // Credentials are required; a wrong token is refused too.
    assert_eq!(http(addr, "GET", "/metrics", None, None).status, 401);
    assert_eq!(http(addr, "GET", "/metrics", Some("nope"), None).status, 401);

    let scrape = || {
        let r = http(addr, "GET", "/metrics", Some(&viewer), None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        r.body
    };
    let text = scrape();
    let (rc, said) = promtool(&text);
    eprintln!("--- promtool check metrics: exit {rc}, output {said:?}");
    eprintln!("--- /metrics ({} lines):\n{text}", text.lines().count());
    assert_eq!(rc, 0, "promtool check metrics failed: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool had remarks: {said}");

    let m = parse_and_check(&text);
    assert_eq!(m.value("corral_vm_up", &[("vm", "up")]), 1.0);
    assert_eq!(m.value("corral_vm_up", &[("vm", "down")]), 0.0);
    assert_eq!(m.value("corral_vm_state", &[("vm", "up"), ("state", "running")]), 1.0);
    assert_eq!(m.value("corral_vm_state", &[("vm", "up"), ("state", "stopped")]), 0.0);
    assert_eq!(m.value("corral_vm_state", &[("vm", "down"), ("state", "stopped")]), 1.0);
    for vm in ["up", "down"] {
        // The guests are made with --memory 192M and the default single vCPU.
        assert_eq!(
            m.value("corral_vm_memory_configured_bytes", &[("vm", vm)]),
            (192u64 << 20) as f64
        );
        assert_eq!(m.value("corral_vm_vcpus", &[("vm", vm)]), 1.0);
    }
    // Resource counters for the running VM only.
    assert!(m.value("corral_vm_cpu_seconds_total", &[("vm", "up")]) > 0.0);
    assert!(m.value("corral_vm_vcpu_seconds_total", &[("vm", "up"), ("vcpu", "0")]) > 0.0);
    assert!(m.value("corral_vm_memory_rss_bytes", &[("vm", "up")]) > 10e6);
    assert!(m.value("corral_vm_uptime_seconds", &[("vm", "up")]) >= 0.0);
    let read0 = m.value("corral_vm_disk_read_bytes_total", &[("vm", "up"), ("disk", "disk0")]);
    m.value(
        "corral_vm_disk_write_operations_total",
        &[("vm", "up"), ("disk", "disk0")],
    );
    assert!(m.get("corral_vm_cpu_seconds_total", &[("vm", "down")]).is_none());
    assert!(m.get("corral_vm_memory_rss_bytes", &[("vm", "down")]).is_none());
    // The host, and the weird store path read back through the escapes.
    assert!(m.value("corral_host_cpus", &[]) >= 1.0);
    assert!(m.value("corral_host_memory_total_bytes", &[]) > m.value("corral_host_memory_available_bytes", &[]));
    assert!(m.value("corral_host_cpu_seconds_total", &[("mode", "busy")]) > 0.0);
    m.value("corral_host_load5", &[]);
    let store_label = store.display().to_string();
    assert!(
        m.value(
            "corral_host_filesystem_size_bytes",
            &[("role", "backup"), ("path", &store_label)]
        ) > 0.0
    );
    // The backup of `down` ended between its start and this scrape; `up` has none.
    let done = m.value("corral_backup_last_success_timestamp_seconds", &[("vm", "down")]);
    assert!(
        done > before_scrape - 600.0 && done <= before_scrape + 1.0,
        "{done} vs {before_scrape}"
    );
    assert!(m.value("corral_backup_duration_seconds", &[("vm", "down")]) >= 0.0);
    assert!(m
        .get("corral_backup_last_success_timestamp_seconds", &[("vm", "up")])
        .is_none());
    assert_eq!(m.value("corral_job_failures_total", &[("kind", "backup")]), 0.0);
    assert_eq!(
        m.value("corral_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(m.value("corral_sample_age_seconds", &[]) < 30.0);

    // The guest reads its disk: the next passes show the counters grown.
    let mut con = env.console("up");
    con.ok("dd if=/dev/vda of=/dev/null bs=64k count=256 iflag=direct 2>/dev/null");
    let mut later = None;
    common::wait_for(Duration::from_secs(20), || {
        let m = parse_and_check(&scrape());
        let grown = m.value("corral_vm_disk_read_bytes_total", &[("vm", "up"), ("disk", "disk0")]) > read0;
        later = Some(m);
        grown
    })
    .unwrap_or_else(|_| panic!("disk reads never grew past {read0}"));
    let later = later.unwrap();
    assert!(
        later.value("corral_vm_cpu_seconds_total", &[("vm", "up")])
            > m.value("corral_vm_cpu_seconds_total", &[("vm", "up")])
    );
    let (rc, said) = promtool(&scrape());
    assert_eq!(rc, 0, "{said}");
}
