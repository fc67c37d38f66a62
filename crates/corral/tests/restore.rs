//! Restore modes with real QEMU images (stopped VMs, data written with qemu-io): a new VM,
//! the backup's own name, one disk only, in place over a stopped VM (and refused over a
//! running one), and the per-VM skeleton default.

mod common;

use std::path::{Path, PathBuf};

use common::{disk_path, pattern_at, qemu_io, same, tree_digest, Env};

/// A stopped VM `name` with a system disk and a data disk `data1`, each holding a pattern.
fn two_disk_vm(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    env.ok(&[
        "vm",
        "create",
        name,
        "--disk",
        "32M",
        "--display",
        "none",
        "--network",
        "none",
    ]);
    env.ok(&[
        "disk", "add", name, "--size", "16M", "--role", "data", "--name", "data1",
    ]);
    let (sys, data) = (disk_path(env, name, 0), disk_path(env, name, 1));
    qemu_io(&sys, "write -P 0x11 0 4M");
    qemu_io(&sys, "write -P 0x12 20M 1M");
    qemu_io(&data, "write -P 0x21 1M 2M");
    (sys, data)
}

fn copy_of(env: &Env, img: &Path, tag: &str) -> PathBuf {
    let p = env.dir_path().join(format!("{tag}.qcow2"));
    std::fs::copy(img, &p).unwrap();
    p
}

#[test]
fn restore_as_new_own_name_one_disk_and_in_place() {
    let env = Env::new();
    let (sys, data) = two_disk_vm(&env, "rv");
    // --json: the result on stdout, progress lines with byte counts on stderr; the last
    // one (the finished job) carries what the result says was read and stored.
    let out = env.run(&["backup", "run", "rv", "--json"]);
    assert!(out.status.success());
    let b1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "job")
        .collect();
    let last = &events.last().expect("progress lines")["job"];
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["bytes"]["read"], b1[0]["stats"]["bytes_read"], "{last}");
    assert_eq!(last["bytes"]["stored"], b1[0]["stats"]["stored_bytes"], "{last}");
    assert!(b1[0]["stats"]["duration_ms"].as_u64().unwrap() > 0, "{b1}");
    let id1 = b1[0]["id"].as_str().unwrap().to_string();
    let (sys1, data1) = (copy_of(&env, &sys, "sys1"), copy_of(&env, &data, "data1"));

    // As a new VM: both disks equal the originals, JSON says what was written.
    let r = env.json(&["backup", "restore", &id1, "--as", "rv2"]);
    assert_eq!(r["vm"], "rv2");
    assert_eq!(r["in_place"], false);
    let written: u64 = r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["written"].as_u64().unwrap())
        .sum();
    assert_eq!(written, (5 + 2) << 20, "only the data is written: {r}");
    assert!(same(&disk_path(&env, "rv2", 0), &sys1));
    assert!(same(&disk_path(&env, "rv2", 1), &data1));

    // Without --as while the VM exists: refused, nothing changes.
    let before = tree_digest(&env.data_dir());
    let err = env.fails(&["backup", "restore", &id1]);
    assert!(
        err.contains("exists") && err.contains("--as") && err.contains("--in-place"),
        "{err}"
    );
    assert_eq!(tree_digest(&env.data_dir()), before);

    // One disk only into a new VM: data1 restored, the system disk empty at its size.
    let r = env.json(&["backup", "restore", &id1, "--as", "onlydata", "--disk", "data1"]);
    let how: Vec<&str> = r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["how"].as_str().unwrap())
        .collect();
    assert_eq!(how, ["empty", "restored"]);
    assert!(same(&disk_path(&env, "onlydata", 1), &data1));
    assert!(pattern_at(&disk_path(&env, "onlydata", 0), 0, 4 << 20, 0));
    let err = env.fails(&["backup", "restore", &id1, "--as", "x", "--disk", "nosuch"]);
    assert!(err.contains("no disk \"nosuch\"") && err.contains("data1"), "{err}");

    // In place: the VM's disks change after the backup, then come back exactly; a chunk
    // zero in the backup but written since must be zeroed again.
    qemu_io(&sys, "write -P 0x99 0 1M");
    qemu_io(&sys, "write -P 0x98 8M 1M");
    qemu_io(&data, "write -P 0x97 1M 64k");
    let r = env.json(&["backup", "restore", &id1, "--in-place", "--disk", "data1"]);
    assert_eq!(r["in_place"], true);
    assert!(same(&data, &data1), "data1 is back");
    assert!(pattern_at(&sys, 0, 1 << 20, 0x99), "the system disk was not selected");
    env.ok(&["backup", "restore", &id1, "--in-place"]);
    assert!(same(&sys, &sys1) && same(&data, &data1));
    // The next backup is still incremental (the bitmaps stayed) and sees what the restore
    // changed: a restore of it equals the disks too.
    let b2 = env.json(&["backup", "run", "rv"]);
    assert_eq!(b2[0]["kind"], "incremental", "{b2}");
    assert!(b2[0]["stats"]["bytes_read"].as_u64().unwrap() >= 2 << 20, "{b2}");
    env.ok(&["backup", "restore", b2[0]["id"].as_str().unwrap(), "--as", "rv3"]);
    assert!(same(&disk_path(&env, "rv3", 0), &sys1));

    // verify by VM name checks that VM's backups; an unknown name is bad input.
    let v = env.json(&["backup", "verify", "rv"]);
    assert_eq!(v["backups_checked"], 2, "{v}");
    let v = env.json(&["backup", "verify", "--all"]);
    assert_eq!(v["backups_checked"], 2, "{v}");
    assert_eq!(env.run(&["backup", "verify", "nosuchvm"]).status.code(), Some(2));

    // Under its own name once the VM is gone.
    env.ok(&["vm", "delete", "rv"]);
    let r = env.json(&["backup", "restore", &id1]);
    assert_eq!(r["vm"], "rv");
    assert!(same(&disk_path(&env, "rv", 0), &sys1));
}

#[test]
fn in_place_is_refused_for_a_running_vm_and_a_damaged_backup() {
    let env = Env::new();
    env.create_guest("live", "");
    qemu_io(&disk_path(&env, "live", 0), "write -P 0x33 0 2M");
    let b = env.json(&["backup", "run", "live"]);
    let id = b[0]["id"].as_str().unwrap().to_string();
    env.ok(&["vm", "start", "live"]);
    let before = tree_digest(&env.data_dir());
    let out = env.run(&["backup", "restore", &id, "--in-place"]);
    assert_eq!(out.status.code(), Some(3), "wrong state is exit 3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped") && err.contains("--as"), "{err}");
    env.ok(&["vm", "kill", "live"]);
    assert_eq!(tree_digest(&env.data_dir()), before, "nothing changed");
    // --as and --in-place together is a usage error.
    assert_eq!(
        env.run(&["backup", "restore", &id, "--in-place", "--as", "x"])
            .status
            .code(),
        Some(2)
    );

    // A flipped byte in a pack: an in-place restore writes nothing at all.
    let disk = disk_path(&env, "live", 0);
    let copy = copy_of(&env, &disk, "before");
    let packs = env.data_dir().join("backups/packs");
    let pack = common::walk_files(&packs)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack file");
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    let err = env.fails(&["backup", "restore", &id, "--in-place"]);
    assert!(err.contains("damaged") && err.contains("nothing was written"), "{err}");
    assert!(same(&disk, &copy));
}

#[test]
fn skeleton_by_default_from_the_spec() {
    let env = Env::new();
    let (_sys, data) = two_disk_vm(&env, "sk");
    let out = env
        .cmd()
        .args(["vm", "edit", "sk"])
        .env(
            "EDITOR",
            "sh -c 'printf \"\\n[backup]\\nskeleton = true\\n\" >> \"$0\"'",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.json(&["vm", "show", "sk"])["spec"]["backup"]["skeleton"], true);
    let b = env.json(&["backup", "run", "sk"]);
    assert_eq!(b[0]["kind"], "skeleton");
    assert_eq!(b[0]["stats"]["bytes_read"], (5u64 << 20), "the data disk is not read");
    let b = env.json(&["backup", "run", "sk", "--all-disks"]);
    assert_eq!(b[0]["kind"], "full");
    let id = b[0]["id"].as_str().unwrap();
    env.ok(&["backup", "restore", id, "--as", "sk2"]);
    assert!(same(&disk_path(&env, "sk2", 1), &data));
}
