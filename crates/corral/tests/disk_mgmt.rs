//! Disk management with the real test guest: hot-plug, live resize, unplug and CD-ROM media
//! changes on a running VM (checked from inside the guest and through QEMU's own monitor),
//! the same operations on a stopped VM (checked in the spec and with `qemu-img info`), and
//! bad input that must change nothing on disk.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{tree_digest, wait_for, Console, Env};
use serde_json::Value;

/// One read-only QMP command on the VM's status monitor (the same one `vm status` uses).
fn qmp(env: &Env, vm: &str, cmd: &str) -> Value {
    let s = UnixStream::connect(env.vm_run(vm).join("status.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "QMP closed");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("event").is_none() {
            return v;
        }
    };
    reply(); // greeting
    writeln!(w, r#"{{"execute":"qmp_capabilities"}}"#).unwrap();
    reply();
    writeln!(w, r#"{{"execute":"{cmd}"}}"#).unwrap();
    let v = reply();
    v["return"].clone()
}

/// The file in the running VM's CD-ROM drive (`None`: empty), from QEMU's `query-block`.
fn cd_medium(env: &Env, vm: &str) -> Option<String> {
    let blocks = qmp(env, vm, "query-block");
    let cd = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["qdev"] == "cd0")
        .unwrap_or_else(|| panic!("no cd0 in {blocks}"));
    cd["inserted"]["file"].as_str().map(str::to_string)
}

/// The guest's block devices with their size in 1 KiB blocks (`/proc/partitions`).
fn partitions(con: &mut Console) -> Vec<(String, u64)> {
    con.ok("cat /proc/partitions")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] != "major").then(|| (f[3].to_string(), f[2].parse().unwrap()))
        })
        .collect()
}

fn wait_partitions(con: &mut Console, what: &str, want: impl Fn(&[(String, u64)]) -> bool) -> Vec<(String, u64)> {
    let mut last = vec![];
    let ok = wait_for(Duration::from_secs(30), || {
        last = partitions(con);
        want(&last)
    });
    assert!(ok.is_ok(), "guest never showed {what}; /proc/partitions: {last:?}");
    last
}

fn spec(env: &Env, vm: &str) -> Value {
    env.json(&["vm", "show", vm])["spec"].clone()
}

fn spec_disk(env: &Env, vm: &str, disk: &str) -> Option<Value> {
    spec(env, vm)["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == disk)
        .cloned()
}

fn virtual_size(path: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

fn iso(env: &Env, name: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, vec![0u8; 64 << 10]).unwrap();
    p
}

/// Runs a command that must fail with `code` and change nothing under the data dir.
fn refused(env: &Env, args: &[&str], code: i32, needle: &str) {
    let before = tree_digest(&env.data_dir());
    let out = env.run(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "corral {args:?}: {err}");
    assert!(err.contains(needle), "corral {args:?}: expected {needle:?} in: {err}");
    assert_eq!(tree_digest(&env.data_dir()), before, "corral {args:?} changed files");
}

/// Holds the VM's lock the way a running corral operation does.
fn hold_lock(env: &Env, vm: &str, op: &str) -> nix::fcntl::Flock<std::fs::File> {
    let dir = env.run_dir().join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(format!("{vm}.lock")))
        .unwrap();
    let mut l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    writeln!(l, "{} {op}", std::process::id()).unwrap();
    l
}

#[test]
fn running_vm_hotplug_resize_unplug_and_cdrom() {
    let env = Env::new();
    let g = common::guest();
    let iso_a = iso(&env, "a.iso");
    let iso_b = iso(&env, "b.iso");
    env.create_guest_from("live", &g.kernel, &g.initrd, "", &["--cdrom", iso_a.to_str().unwrap()]);
    env.ok(&["vm", "start", "live"]);
    env.wait_ready("live", 1);
    let mut con = env.console("live");
    assert_eq!(partitions(&mut con), vec![("vda".to_string(), 65536)]);

    // Hot-plug: the guest sees the new virtio disk at once; the spec has it too.
    let r = env.json(&["disk", "add", "live", "--size", "32M", "--name", "data1"]);
    assert_eq!(
        (r["live"].as_bool(), r["role"].as_str()),
        (Some(true), Some("data")),
        "{r}"
    );
    assert_eq!(r["bus"], "virtio");
    wait_partitions(&mut con, "vdb of 32M", |p| p.contains(&("vdb".into(), 32768)));
    let path = PathBuf::from(r["path"].as_str().unwrap());
    assert!(path.starts_with(env.vm_data("live")), "{path:?}");
    assert_eq!(virtual_size(&path), 32 << 20);
    let d = spec_disk(&env, "live", "data1").expect("data1 in the spec");
    assert_eq!(
        (d["size"].as_str(), d["role"].as_str()),
        (Some("32M"), Some("data")),
        "{d}"
    );

    // A second disk on the SCSI bus (its controller is hot-plugged as well).
    env.ok(&[
        "disk", "add", "live", "--size", "16M", "--name", "sdata", "--bus", "scsi",
    ]);
    let models = con.ok("sleep 1; cat /sys/bus/scsi/devices/*/model 2>/dev/null; true");
    assert!(models.contains("QEMU HARDDISK"), "guest sees no SCSI disk: {models:?}");

    // Live resize: the guest sees the new size.
    let r = env.json(&["disk", "resize", "live", "data1", "48M"]);
    assert_eq!(
        (r["previous_size"].as_u64(), r["size"].as_u64()),
        (Some(32 << 20), Some(48 << 20))
    );
    wait_partitions(&mut con, "vdb of 48M", |p| p.contains(&("vdb".into(), 49152)));
    assert_eq!(virtual_size(&path), 48 << 20);
    assert_eq!(spec_disk(&env, "live", "data1").unwrap()["size"], "48M");

    // Bad input changes nothing, and says what is wrong.
    refused(&env, &["disk", "resize", "live", "data1", "16M"], 2, "is 48M");
    refused(
        &env,
        &["disk", "resize", "live", "nosuch", "1G"],
        2,
        "no disk named \"nosuch\"",
    );
    refused(
        &env,
        &["disk", "add", "live", "--size", "8M", "--name", "data1"],
        2,
        "already has a disk named",
    );
    refused(&env, &["disk", "add", "live", "--size", "8Q"], 2, "8Q");
    refused(
        &env,
        &["disk", "add", "live", "--size", "8M", "--name", "../x"],
        2,
        "bad disk name",
    );
    refused(
        &env,
        &["disk", "add", "live", "--size", "8M", "--bus", "sata"],
        3,
        "stop the VM first",
    );
    refused(&env, &["disk", "remove", "live", "disk0"], 3, "root bus");
    let missing = env.dir.path().join("missing.iso");
    refused(
        &env,
        &["vm", "cdrom", "live", missing.to_str().unwrap()],
        2,
        "does not exist",
    );
    {
        let _held = hold_lock(&env, "live", "snapshot");
        let busy = format!("VM live is busy: snapshot by pid {}", std::process::id());
        refused(&env, &["disk", "add", "live", "--size", "8M"], 3, &busy);
        refused(&env, &["disk", "resize", "live", "data1", "64M"], 3, &busy);
        refused(&env, &["disk", "remove", "live", "data1"], 3, &busy);
        refused(&env, &["vm", "cdrom", "live", "--eject"], 3, &busy);
    }
    assert_eq!(partitions(&mut con).len(), 2, "refusals left the guest alone");

    // CD-ROM: change the medium and eject, live.
    assert_eq!(cd_medium(&env, "live").as_deref(), iso_a.to_str());
    let r = env.json(&["vm", "cdrom", "live", iso_b.to_str().unwrap()]);
    assert_eq!(r["live"], true, "{r}");
    assert_eq!(cd_medium(&env, "live").as_deref(), iso_b.to_str());
    assert_eq!(spec(&env, "live")["cdrom"].as_str(), iso_b.to_str());
    env.ok(&["vm", "cdrom", "live", "--eject"]);
    assert_eq!(cd_medium(&env, "live"), None);
    assert!(spec(&env, "live").get("cdrom").is_none());

    // After live device changes a saved state could not be resumed: save refuses.
    refused(&env, &["vm", "save", "live"], 3, "devices changed since it started");

    // Unplug: the guest lets go, the image corral made is deleted.
    let r = env.json(&["disk", "remove", "live", "data1"]);
    assert_eq!(
        (r["live"].as_bool(), r["file_removed"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    wait_partitions(&mut con, "vdb gone", |p| p.len() == 1);
    assert!(!path.exists());
    assert!(spec_disk(&env, "live", "data1").is_none());
    let r = env.json(&["disk", "remove", "live", "sdata", "--keep-file"]);
    assert_eq!(r["file_removed"], false, "{r}");
    assert!(
        Path::new(r["path"].as_str().unwrap()).exists(),
        "--keep-file keeps the image"
    );
    let models = con.ok("cat /sys/bus/scsi/devices/*/model 2>/dev/null; true");
    assert!(
        !models.contains("QEMU HARDDISK"),
        "SCSI disk still in the guest: {models:?}"
    );

    // A guest that cannot answer (paused) does not release a disk: a clear timeout, the disk
    // stays in the spec, and a second run after the resume finishes the job.
    env.ok(&["disk", "add", "live", "--size", "8M", "--name", "late"]);
    wait_partitions(&mut con, "a new 8M disk", |p| p.iter().any(|(_, s)| *s == 8192));
    env.ok(&["vm", "pause", "live"]);
    let err = env.fails(&["disk", "remove", "live", "late", "--timeout", "2s"]);
    assert!(err.contains("to release disk late") && err.contains("paused"), "{err}");
    assert!(spec_disk(&env, "live", "late").is_some());
    env.ok(&["vm", "resume", "live"]);
    env.ok(&["disk", "remove", "live", "late"]);
    assert!(spec_disk(&env, "live", "late").is_none());
    wait_partitions(&mut con, "the 8M disk gone", |p| p.len() == 1);

    drop(con);
    env.ok(&["vm", "stop", "live", "--force"]);
}

#[test]
fn stopped_vm_disks_and_cdrom_in_the_spec() {
    let env = Env::new();
    env.create_guest("cold", "");
    let iso_a = iso(&env, "a.iso");

    // Add: a qcow2 in the VM's directory, in the spec; SATA is fine on a stopped VM.
    let r = env.json(&["disk", "add", "cold", "--size", "16M"]);
    assert_eq!(
        (r["disk"].as_str(), r["live"].as_bool()),
        (Some("disk1"), Some(false)),
        "{r}"
    );
    let data = PathBuf::from(r["path"].as_str().unwrap());
    assert_eq!(virtual_size(&data), 16 << 20);
    env.ok(&[
        "disk", "add", "cold", "--size", "8M", "--name", "legacy", "--bus", "sata", "--role", "system",
    ]);
    let d = spec_disk(&env, "cold", "legacy").unwrap();
    assert_eq!(
        (d["bus"].as_str(), d["role"].as_str()),
        (Some("sata"), Some("system")),
        "{d}"
    );

    // Resize with qemu-img; shrinking is refused and says the current size.
    env.ok(&["disk", "resize", "cold", "disk1", "24M"]);
    assert_eq!(virtual_size(&data), 24 << 20);
    assert_eq!(spec_disk(&env, "cold", "disk1").unwrap()["size"], "24M");
    refused(&env, &["disk", "resize", "cold", "disk1", "20M"], 2, "is 24M");
    refused(&env, &["disk", "resize", "cold", "disk1", "1000"], 2, "too small");

    // CD-ROM in the spec; a missing ISO changes nothing.
    refused(
        &env,
        &["vm", "cdrom", "cold", "/nonexistent/x.iso"],
        2,
        "does not exist",
    );
    env.ok(&["vm", "cdrom", "cold", iso_a.to_str().unwrap()]);
    assert_eq!(spec(&env, "cold")["cdrom"].as_str(), iso_a.to_str());

    // The next start builds what the spec now says.
    env.ok(&["vm", "start", "cold"]);
    env.wait_ready("cold", 1);
    let mut con = env.console("cold");
    wait_partitions(&mut con, "vda and the 24M vdb", |p| {
        p.contains(&("vda".into(), 65536)) && p.contains(&("vdb".into(), 24576))
    });
    assert_eq!(cd_medium(&env, "cold").as_deref(), iso_a.to_str());
    drop(con);

    // A saved VM refuses disk changes: its memory belongs to the devices as they are.
    env.ok(&["vm", "save", "cold"]);
    assert_eq!(env.state("cold"), "saved");
    refused(&env, &["disk", "add", "cold", "--size", "8M"], 3, "saved");
    refused(&env, &["disk", "remove", "cold", "disk1"], 3, "saved");
    refused(&env, &["vm", "cdrom", "cold", "--eject"], 3, "saved");
    env.ok(&["vm", "start", "cold"]);
    env.ok(&["vm", "stop", "cold", "--force"]);

    // Remove: the image corral made goes, unless --keep-file; an image outside the VM's
    // directory is never deleted.
    let r = env.json(&["disk", "remove", "cold", "disk1"]);
    assert_eq!(
        (r["live"].as_bool(), r["file_removed"].as_bool()),
        (Some(false), Some(true)),
        "{r}"
    );
    assert!(!data.exists());
    env.ok(&["disk", "remove", "cold", "legacy", "--keep-file"]);
    assert!(env.vm_data("cold").join("legacy.qcow2").exists());
    refused(
        &env,
        &["disk", "add", "cold", "--size", "8M", "--name", "legacy"],
        2,
        "already exists",
    );
    env.ok(&["vm", "cdrom", "cold", "--eject"]);
    assert!(spec(&env, "cold").get("cdrom").is_none());

    // A VM that boots from disk keeps its only system disk.
    env.ok(&["vm", "create", "boot", "--disk", "8M", "--display", "none"]);
    refused(&env, &["disk", "remove", "boot", "disk0"], 2, "only system disk");
    let ext = env.dir.path().join("ext.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&ext)
        .arg("8M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = format!(
        "name = \"extvm\"\n[boot]\nkernel = \"{}\"\n[[disks]]\nname = \"ext\"\npath = \"{}\"\n",
        common::guest().kernel.display(),
        ext.display()
    );
    let spec_file = env.dir.path().join("extvm.toml");
    std::fs::write(&spec_file, text).unwrap();
    env.ok(&["vm", "define", spec_file.to_str().unwrap()]);
    let out = env.ok(&["disk", "remove", "extvm", "ext"]);
    assert!(
        out.contains("kept") && out.contains("outside the VM's directory"),
        "{out}"
    );
    assert!(ext.exists());
}
