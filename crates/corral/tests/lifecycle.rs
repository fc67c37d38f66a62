//! Lifecycle on a real QEMU booting the real test guest, driven through the `corral` binary.

mod common;

use std::time::Duration;

use common::{wait_for, Env};

/// create → start → ready marker → commands over the serial channel → pause/resume →
/// console log → ACPI stop that the guest itself carries out → delete.
#[test]
fn boot_pause_console_and_guest_poweroff() {
    let env = Env::new();
    env.create_guest("life", "");
    let list = env.json(&["vm", "list"]);
    assert_eq!(list[0]["name"], "life");
    assert_eq!(list[0]["state"], "stopped");
    assert_eq!(list[0]["memory"], 192 * 1024 * 1024);

    let started = env.json(&["vm", "start", "life"]);
    assert!(started["pid"].as_u64().unwrap() > 0);
    env.wait_ready("life", 1);
    assert_eq!(env.state("life"), "running");

    // The guest sees its disk and answers commands.
    let mut con = env.console("life");
    let size = con.ok("cat /sys/block/vda/size");
    assert_eq!(size.trim(), (64 * 1024 * 1024 / 512).to_string());

    env.ok(&["vm", "pause", "life"]);
    assert_eq!(env.state("life"), "paused");
    let again = env.fails(&["vm", "pause", "life"]);
    assert!(again.contains("already paused"), "{again}");
    env.ok(&["vm", "resume", "life"]);
    assert_eq!(env.state("life"), "running");
    assert_eq!(con.ok("echo still-here").trim(), "still-here");

    let log = env.ok(&["vm", "console", "life", "--no-follow"]);
    assert!(log.contains("CORRAL-GUEST-READY"), "{log}");

    let stop = env.json(&["vm", "stop", "life", "--timeout", "60s"]);
    assert_eq!(stop["guest_initiated"], true, "{stop}");
    assert_eq!(stop["forced"], false, "{stop}");
    assert_eq!(env.state("life"), "stopped");
    assert!(env.qemu_pids().is_empty(), "QEMU removed its pidfile on a clean exit");
    let log = std::fs::read_to_string(env.vm_data("life").join("console.log")).unwrap();
    assert!(log.contains("CORRAL-POWEROFF"), "the guest's acpid ran poweroff: {log}");

    let del = env.json(&["vm", "delete", "life"]);
    assert_eq!(del["removed"].as_array().unwrap().len(), 1);
    assert!(!env.vm_data("life").exists());
    assert_eq!(env.json(&["vm", "list"]).as_array().unwrap().len(), 0);
}

/// A guest that ignores the power button is stopped by force after the timeout.
#[test]
fn guest_without_acpid_is_forced_off_after_timeout() {
    let env = Env::new();
    env.create_guest("deaf", "corral.noacpid");
    env.ok(&["vm", "start", "deaf"]);
    env.wait_ready("deaf", 1);
    let t0 = std::time::Instant::now();
    let stop = env.json(&["vm", "stop", "deaf", "--timeout", "3s"]);
    let took = t0.elapsed();
    assert_eq!(stop["forced"], true, "{stop}");
    assert_eq!(stop["guest_initiated"], false, "{stop}");
    assert!(took >= Duration::from_secs(3), "waited the timeout first: {took:?}");
    assert_eq!(env.state("deaf"), "stopped");
}

/// save writes the guest's memory to disk and ends QEMU; start brings the same memory back
/// and removes the state file.
#[test]
fn save_and_resume_keep_guest_memory() {
    let env = Env::new();
    env.create_guest("sav", "");
    env.ok(&["vm", "start", "sav"]);
    env.wait_ready("sav", 1);
    let mut con = env.console("sav");
    // /tmp in the guest is tmpfs: this value lives only in guest RAM.
    let token = format!("mem-{}", std::process::id());
    con.ok(&format!("echo {token} > /tmp/value"));
    drop(con);

    let saved = env.json(&["vm", "save", "sav"]);
    assert!(saved["bytes"].as_u64().unwrap() > 1 << 20, "{saved}");
    assert_eq!(env.state("sav"), "saved");
    assert!(env.qemu_pids().is_empty(), "QEMU ended after save");
    assert!(env.vm_data("sav").join("state.sav").exists());

    let resumed = env.json(&["vm", "start", "sav"]);
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(env.state("sav"), "running");
    assert!(
        !env.vm_data("sav").join("state.sav").exists(),
        "state file removed once used"
    );
    let mut con = env.console("sav");
    assert_eq!(con.ok("cat /tmp/value").trim(), token);
    // It did not boot again: one ready marker only.
    let log = std::fs::read_to_string(env.vm_data("sav").join("console.log")).unwrap();
    assert_eq!(log.matches("CORRAL-GUEST-READY").count(), 1, "{log}");
    env.ok(&["vm", "stop", "sav", "--force"]);
    let _ = wait_for(Duration::from_secs(5), || env.qemu_pids().is_empty());
}
