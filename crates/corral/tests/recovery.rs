//! corral can die at any point without taking VMs with it, and the next command reports the
//! true state: restart recovery, kill -9 of corral during start, a crashed QEMU, stop-all.

mod common;

use std::time::Duration;

use common::{wait_for, Env};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// VMs outlive every corral process; a QEMU that dies is reported as crashed with its log,
/// and a plain `start` brings the VM back.
#[test]
fn restart_recovery_and_crash_report() {
    let env = Env::new();
    env.create_guest("rec", "");
    let pid = env.json(&["vm", "start", "rec"])["pid"].as_i64().unwrap();
    env.wait_ready("rec", 1);
    // Each corral call above was a separate process that has exited: a "restart" of corral.
    let st = env.json(&["vm", "status", "rec"]);
    assert_eq!(st["state"], "running");
    assert_eq!(st["pid"].as_i64().unwrap(), pid);
    assert_eq!(env.console("rec").ok("echo alive").trim(), "alive");

    // QEMU dies behind corral's back.
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .unwrap();
    let st = env.json(&["vm", "status", "rec"]);
    assert_eq!(st["state"], "crashed", "{st}");
    let last = st["last_log"].as_array().unwrap();
    assert!(
        last.iter().any(|l| l.as_str().unwrap().contains("CORRAL-GUEST-READY")),
        "last log lines: {st}"
    );
    let table = env.ok(&["vm", "list"]);
    assert!(
        table.lines().any(|l| l.starts_with("rec") && l.contains("crashed")),
        "{table}"
    );

    // A crashed VM starts again.
    env.ok(&["vm", "start", "rec"]);
    env.wait_ready("rec", 2);
    assert_eq!(env.state("rec"), "running");
    env.ok(&["vm", "kill", "rec"]);
    assert_eq!(
        env.state("rec"),
        "stopped",
        "kill leaves a clean stopped VM, not a crashed one"
    );
}

/// kill -9 of corral at several points of a start: the next command always agrees with
/// reality (a QEMU that got going is running; otherwise stopped), and the VM stays usable.
#[test]
fn kill_dash_nine_of_corral_during_start() {
    let env = Env::new();
    env.create_guest("k9", "");
    let uuid = env.json(&["vm", "show", "k9"])["uuid"].as_str().unwrap().to_string();
    // Reality, independent of corral's pidfiles: any process whose argv carries the VM's UUID.
    let qemu_alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|w| w == uuid.as_bytes()))
                .unwrap_or(false)
        })
    };
    for delay_ms in [0u64, 5, 15, 30, 60, 150, 600] {
        let mut child = env.cmd().args(["vm", "start", "k9"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();

        let st = env.json(&["vm", "status", "k9"]);
        let state = st["state"].as_str().unwrap().to_string();
        let alive = qemu_alive();
        match state.as_str() {
            "running" => {
                assert!(alive, "reported running without a QEMU (delay {delay_ms} ms)");
                env.wait_ready("k9", 1);
                let out = env.json(&["vm", "stop", "k9", "--force"]);
                assert_eq!(out["forced"], true);
            }
            "stopped" => assert!(!alive, "reported stopped with a live QEMU (delay {delay_ms} ms)"),
            other => panic!("after kill -9 at {delay_ms} ms the VM is {other}: {st}"),
        }
        assert_eq!(env.state("k9"), "stopped", "after kill -9 at {delay_ms} ms");
        assert!(!qemu_alive(), "no QEMU left over (delay {delay_ms} ms)");
        let _ = std::fs::remove_file(env.vm_data("k9").join("console.log"));
    }
    // No lock is left behind: a normal start and stop still work.
    env.ok(&["vm", "start", "k9"]);
    env.ok(&["vm", "stop", "k9", "--force"]);
}

/// `host stop-all` shuts down three guests at once and waits for all of them; a mutation
/// that races with a running one is refused with who holds the VM.
#[test]
fn host_stop_all_with_three_vms_and_busy_lock() {
    let env = Env::new();
    for n in ["h1", "h2", "h3"] {
        env.create_guest(n, "");
    }
    env.create_guest("deaf", "corral.noacpid");
    for n in ["h1", "h2", "h3", "deaf"] {
        env.ok(&["vm", "start", n]);
    }
    for n in ["h1", "h2", "h3", "deaf"] {
        env.wait_ready(n, 1);
    }

    // A slow stop holds deaf's lock; a second mutation is refused at once.
    let mut slow = env
        .cmd()
        .args(["vm", "stop", "deaf", "--timeout", "20s"])
        .spawn()
        .unwrap();
    let lockfile = env.run_dir().join("locks/deaf.lock");
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&lockfile)
            .map(|t| t.contains("stop"))
            .unwrap_or(false)
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    let err = env.fails(&["vm", "save", "deaf"]);
    assert!(
        err.contains(&format!("VM deaf is busy: stop by pid {}", slow.id())),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "refused at once");
    let _ = kill(Pid::from_raw(slow.id() as i32), Signal::SIGKILL);
    let _ = slow.wait();
    env.ok(&["vm", "kill", "deaf"]);

    let report = env.json(&["host", "stop-all", "--timeout", "60s"]);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{report}");
    for r in results {
        assert_eq!(r["outcome"], "stopped", "{report}");
    }
    for n in ["h1", "h2", "h3"] {
        assert_eq!(env.state(n), "stopped");
    }
    assert!(env.qemu_pids().is_empty());
}

/// Host shutdown and boot: `stop-all --save` saves every running VM, `start-autostart`
/// resumes the autostart ones with their memory intact and leaves the others alone.
#[test]
fn host_shutdown_saves_and_boot_resumes_autostart_vms() {
    let env = Env::new();
    let g = common::guest();
    for n in ["a1", "a2"] {
        env.create_guest_from(n, &g.kernel, &g.initrd, "", &["--autostart"]);
    }
    env.create_guest("manual", "");

    let boot = env.json(&["host", "start-autostart"]);
    let outcomes: Vec<(String, String)> = boot["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("a1".into(), "started".into()), ("a2".into(), "started".into())],
        "{boot}"
    );
    assert_eq!(env.state("manual"), "stopped");
    env.wait_ready("a1", 1);
    env.wait_ready("a2", 1);
    env.console("a1").ok("echo kept > /tmp/k");

    let down = env.json(&["host", "stop-all", "--save"]);
    for r in down["results"].as_array().unwrap() {
        assert_eq!(r["outcome"], "saved", "{down}");
    }
    assert_eq!(
        (env.state("a1"), env.state("a2")),
        ("saved".to_string(), "saved".to_string())
    );
    assert!(env.qemu_pids().is_empty());

    let boot = env.json(&["host", "start-autostart"]);
    for r in boot["results"].as_array().unwrap() {
        assert_eq!(r["outcome"], "resumed", "{boot}");
    }
    assert_eq!(env.console("a1").ok("cat /tmp/k").trim(), "kept");
    env.ok(&["host", "stop-all"]);
}
