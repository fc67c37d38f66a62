//! `corral metrics` against a real guest under TCG: a busy vCPU shows as CPU time of its
//! thread, writes to the disk as block I/O, traffic as NIC counters (through the real
//! `qemu-ga`), a balloon device's size, and `--summary` adds up what the VMs are given.

mod common;

use std::io::BufRead;
use std::process::Stdio;

use common::{guest, Env};
use serde_json::Value;

fn vm<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {report:#}"))
}

#[test]
fn metrics_of_a_busy_guest_and_a_stopped_one() {
    let env = Env::new();
    let g = guest();
    env.create_guest_from(
        "busy",
        &g.kernel,
        &g.initrd_qga,
        "",
        &["--guest-agent", "--balloon", "--cpus", "2"],
    );
    env.create_guest("idle", "");
    env.ok(&["vm", "start", "busy"]);
    env.wait_ready("busy", 1);
    let mut con = env.console("busy");

    // Traffic through the user-mode NIC: the agent reports counters of interfaces that have
    // an address.
    con.ok("ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up");
    con.run("ping -c 3 -W 1 10.0.2.2");
    // One vCPU spinning, and writes to the disk going on while we sample.
    con.ok("(while :; do :; done) >/dev/null 2>&1 &");
    con.ok("(for i in 1 2 3 4 5 6 7 8 9 10 11 12; do dd if=/dev/zero of=/dev/vda bs=64k count=32 conv=fsync; sleep 0.3; done) >/dev/null 2>&1 &");

    // The agent starts a moment after the ready marker: sample until the NIC shows up.
    let mut report = Value::Null;
    for _ in 0..10 {
        report = env.json(&["metrics", "--interval", "2s"]);
        if vm(&report, "busy")["nics"].as_array().is_some_and(|n| !n.is_empty()) {
            break;
        }
    }
    println!("{report:#}");
    assert_eq!(
        report["interval_ms"].as_u64().map(|ms| ms >= 2000),
        Some(true),
        "{report}"
    );
    let host = &report["host"];
    assert!(host["cpus"].as_u64().unwrap() >= 1);
    assert!(host["cpu_percent"].as_f64().unwrap() > 0.0, "{host}");
    assert!(host["memory_total_bytes"].as_u64().unwrap() > host["memory_available_bytes"].as_u64().unwrap());
    let roles: Vec<&str> = host["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["data", "backup"]);

    let busy = vm(&report, "busy");
    assert_eq!(busy["state"], "running");
    assert_eq!(busy["vcpus"], 2);
    let cpu = &busy["cpu"];
    // A spinning vCPU under TCG keeps about one host CPU busy.
    assert!(cpu["percent"].as_f64().unwrap() > 30.0, "{cpu}");
    let threads = cpu["vcpus"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{cpu}");
    let hottest = threads
        .iter()
        .map(|t| t["percent"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(hottest > 30.0, "no vCPU thread shows the spinning loop: {cpu}");
    let pid = busy["pid"].as_u64().unwrap();
    for t in threads {
        let tid = t["thread_id"].as_u64().unwrap();
        assert!(
            std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
            "vCPU thread {tid} is not a thread of QEMU {pid}"
        );
    }
    let mem = &busy["memory"];
    assert!(mem["rss_bytes"].as_u64().unwrap() > 32 << 20, "{mem}");
    assert_eq!(busy["memory_bytes"], 192u64 << 20);
    // The balloon device reports the guest's memory (all of it: nothing was ballooned out).
    assert_eq!(mem["balloon_actual_bytes"], 192u64 << 20, "{mem}");

    let disk0 = &busy["disks"][0];
    assert_eq!(disk0["disk"], "disk0", "{busy}");
    assert!(disk0["write_bytes_total"].as_u64().unwrap() >= 2 << 20, "{disk0}");
    assert!(disk0["write_bytes_per_second"].as_f64().unwrap() > 0.0, "{disk0}");
    assert!(disk0["write_ops_total"].as_u64().unwrap() > 0, "{disk0}");

    let nic = &busy["nics"][0];
    assert_eq!(nic["nic"], "nic0", "no NIC counters from the guest agent: {busy}");
    assert_eq!(nic["source"], "guest-agent");
    assert!(nic["tx_packets_total"].as_u64().unwrap() >= 3, "{nic}");
    assert!(nic["tx_bytes_total"].as_u64().unwrap() > 0, "{nic}");

    let idle = vm(&report, "idle");
    assert_eq!(idle["state"], "stopped");
    assert!(idle.get("cpu").is_none() && idle.get("pid").is_none(), "{idle}");
    assert!(
        env.argv("idle").iter().all(|a| !a.contains("balloon")),
        "no balloon unless asked for"
    );
    assert_eq!(idle["memory_bytes"], 192u64 << 20);

    // --once: one sample at once, counters without rates.
    let once = env.json(&["metrics", "--once", "busy"]);
    assert!(once.get("interval_ms").is_none(), "{once}");
    let c = &once["vms"][0]["cpu"];
    assert!(
        c["seconds_total"].as_f64().unwrap() > 0.0 && c.get("percent").is_none(),
        "{c}"
    );
    assert!(once["vms"][0]["disks"][0]["write_bytes_total"].as_u64().unwrap() >= 2 << 20);

    // Only the VMs asked for; the table for people names them.
    let one = env.json(&["metrics", "--interval", "1s", "idle"]);
    assert_eq!(one["vms"].as_array().unwrap().len(), 1);
    let table = env.ok(&["metrics", "--interval", "1s"]);
    assert!(
        table.contains("host: ") && table.lines().any(|l| l.starts_with("busy") && l.contains("running")),
        "{table}"
    );

    // --watch --json: one report a line, each with rates, until interrupted.
    let mut child = env
        .cmd()
        .args(["metrics", "--watch", "--json", "--interval", "1s", "busy"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let r: Value = serde_json::from_str(&line).unwrap();
        assert!(r["interval_ms"].as_u64().is_some(), "{line}");
        assert_eq!(r["vms"][0]["name"], "busy");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "--watch ends cleanly on ^C: {status}");

    // --summary: what is given against what the host has.
    let s = env.json(&["metrics", "--summary"]);
    println!("{s:#}");
    assert_eq!(s["vms"], 2);
    assert_eq!(s["vms_running"], 1);
    assert_eq!(s["vcpus_defined"], 3);
    assert_eq!(s["vcpus_running"], 2);
    assert_eq!(s["memory_defined_bytes"], 2 * (192u64 << 20));
    assert_eq!(s["memory_running_bytes"], 192u64 << 20);
    assert!(s["memory_rss_bytes"].as_u64().unwrap() > 32 << 20);
    assert_eq!(s["disk_provisioned_bytes"], 2 * (64u64 << 20));
    let used = s["disk_used_bytes"].as_u64().unwrap();
    assert!(used > 0 && used < 2 * (64u64 << 20) + (8 << 20), "{s}");
    let text = env.ok(&["metrics", "--summary"]);
    assert!(text.contains("2 VMs, 1 running") && text.contains("vCPUs"), "{text}");
}

#[test]
fn bad_metrics_arguments_are_refused() {
    let env = Env::new();
    env.create_guest("a", "");
    let e = env.fails(&["metrics", "nosuch"]);
    assert!(e.contains("nosuch"), "{e}");
    let e = env.fails(&["metrics", "../x"]);
    assert!(e.contains("../x") || e.contains("name"), "{e}");
    let e = env.fails(&["metrics", "--interval", "0s"]);
    assert!(e.contains("--interval"), "{e}");
    let e = env.fails(&["metrics", "--interval", "soon"]);
    assert!(e.contains("soon"), "{e}");
    let e = env.fails(&["metrics", "--summary", "a"]);
    assert!(e.contains("--summary"), "{e}");
    let e = env.fails(&["metrics", "--once", "--interval", "5s"]);
    assert!(e.contains("--once") && e.contains("--interval"), "{e}");
    // Bad [metrics] settings are refused when the config loads.
    let env = Env::with_config("[metrics]\ninterval = \"0s\"\n");
    let e = env.fails(&["metrics"]);
    assert!(e.contains("metrics.interval") && e.contains("1s to 5m"), "{e}");
}
