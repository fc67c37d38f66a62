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

    // The monitor sockets are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    for sock in ["qmp.sock", "status.sock", "serial.sock"] {
        let mode = std::fs::metadata(env.vm_run("life").join(sock))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{sock} has mode {mode:o}");
    }

    // A following console ends by itself when the VM stops.
    let follower = env
        .cmd()
        .args(["vm", "console", "life"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stop = env.json(&["vm", "stop", "life", "--timeout", "60s"]);
    assert_eq!(stop["guest_initiated"], true, "{stop}");
    assert_eq!(stop["forced"], false, "{stop}");
    assert_eq!(env.state("life"), "stopped");
    assert!(env.qemu_pids().is_empty(), "QEMU removed its pidfile on a clean exit");
    let followed = follower.wait_with_output().unwrap();
    assert!(followed.status.success());
    assert!(String::from_utf8_lossy(&followed.stdout).contains("CORRAL-POWEROFF"));
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
    env.boot_guest("deaf", "corral.noacpid");
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
    env.boot_guest("sav", "");
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

/// As root with `[qemu] user`, QEMU runs as that user and still boots the guest.
#[test]
fn qemu_runs_as_the_configured_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let env = Env::with_config("[qemu]\naccel = \"tcg\"\nuser = \"nobody\"\n");
    // The guest files must be readable by nobody: copy them beside the VM.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let g = common::guest();
    let kernel = env.dir.path().join("vmlinuz");
    let initrd = env.dir.path().join("initrd.img");
    std::fs::copy(&g.kernel, &kernel).unwrap();
    std::fs::copy(&g.initrd, &initrd).unwrap();
    env.create_guest_from("nob", &kernel, &initrd, "", &[]);
    let pid = env.json(&["vm", "start", "nob"])["pid"].as_u64().unwrap();
    env.wait_ready("nob", 1);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == nobody.to_string()),
        "{uid_line}"
    );
    // A live linked clone: the running QEMU (as nobody) must get its new overlay, and the
    // clone's QEMU must reach the base in nob's directory.
    env.ok(&["vm", "clone", "nob", "nob2", "--linked"]);
    env.ok(&["vm", "start", "nob2"]);
    env.wait_ready("nob2", 1);
    env.console("nob").ok("echo still-writing > /dev/null; sync");
    let stop = env.json(&["vm", "stop", "nob"]);
    assert_eq!(stop["guest_initiated"], true, "{stop}");
    env.ok(&["vm", "stop", "nob2"]);
}

/// A VNC display comes up on 127.0.0.1 at a free port and speaks RFB; `show` reports it.
#[test]
fn vnc_display_on_loopback() {
    let env = Env::new();
    env.ok(&[
        "vm",
        "create",
        "vnc",
        "--memory",
        "64M",
        "--disk",
        "16M",
        "--display",
        "vnc",
        "--network",
        "none",
    ]);
    let started = env.json(&["vm", "start", "vnc"]);
    let addr = started["vnc"]
        .as_str()
        .expect("start reports the VNC address")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:59"), "{addr}");
    assert_eq!(env.json(&["vm", "status", "vnc"])["vnc"], addr.as_str());
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let mut banner = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut banner).unwrap();
    assert!(banner.starts_with(b"RFB "), "{banner:?}");
    env.ok(&["vm", "kill", "vnc"]);
}

/// `cdrom-once` boots the CD-ROM on the first start only: afterwards the spec boots the disk.
#[test]
fn cdrom_once_switches_to_disk_after_first_start() {
    let env = Env::new();
    let iso = env.dir.path().join("install.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).unwrap();
    env.ok(&[
        "vm",
        "create",
        "inst",
        "--memory",
        "64M",
        "--disk",
        "16M",
        "--display",
        "none",
        "--network",
        "none",
        "--cdrom",
        iso.to_str().unwrap(),
        "--cdrom-once",
    ]);
    assert_eq!(env.json(&["vm", "show", "inst"])["spec"]["boot"]["from"], "cdrom-once");
    let argv = env.argv("inst");
    assert!(
        argv.windows(2).any(|w| w[0] == "-boot" && w[1] == "order=c,once=d"),
        "{argv:?}"
    );
    env.ok(&["vm", "start", "inst"]);
    assert_eq!(env.json(&["vm", "show", "inst"])["spec"]["boot"]["from"], "disk");
    env.ok(&["vm", "kill", "inst"]);
}

/// The guest-agent variant of the test guest answers on the channel corral adds.
#[test]
fn guest_agent_channel_answers() {
    use std::io::{BufRead, BufReader, Write};
    let env = Env::new();
    let g = common::guest();
    env.create_guest_from("qga", &g.kernel, &g.initrd_qga, "", &["--guest-agent"]);
    env.ok(&["vm", "start", "qga"]);
    env.wait_ready("qga", 1);
    let s = std::os::unix::net::UnixStream::connect(env.vm_run("qga").join("qga.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":4242}}}}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["return"], 4242, "{line}");
    env.ok(&["vm", "kill", "qga"]);
}
