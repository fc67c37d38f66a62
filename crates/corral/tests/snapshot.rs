//! Internal snapshots on a running VM (disks + memory, through QMP jobs) and on a stopped
//! VM (disks, through qemu-img), with the real test guest.

mod common;

use common::{read_at, tree_digest, write_at, Env};

#[test]
fn running_vm_snapshot_brings_back_disk_and_memory() {
    let env = Env::new();
    env.boot_guest("snap", "");
    let mut con = env.console("snap");
    write_at(&mut con, 0, "MARKER-A");
    con.ok("echo memory-A > /tmp/value");

    let s = env.json(&[
        "snapshot",
        "create",
        "snap",
        "s1",
        "--description",
        "before the upgrade",
    ]);
    assert_eq!(s["memory"], true, "{s}");
    assert_eq!(env.state("snap"), "running", "snapshot-save resumes the guest");

    write_at(&mut con, 0, "MARKER-B");
    con.ok("echo memory-B > /tmp/value");
    assert_eq!(read_at(&mut con, 0), "MARKER-B");

    env.ok(&["snapshot", "revert", "snap", "s1"]);
    assert_eq!(
        env.state("snap"),
        "running",
        "revert leaves the guest running, not in restore-vm"
    );
    // The console connection belongs to the old guest state: reconnect.
    drop(con);
    let mut con = env.console("snap");
    assert_eq!(con.ok("cat /tmp/value").trim(), "memory-A");
    assert_eq!(read_at(&mut con, 0), "MARKER-A");

    let list = env.json(&["snapshot", "list", "snap"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "s1");
    assert_eq!(list[0]["description"], "before the upgrade");
    let table = env.ok(&["snapshot", "list", "snap"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("s1") && l.contains("yes") && l.contains("before the upgrade")),
        "{table}"
    );
    assert!(list[0]["vm_state_size"].as_u64().unwrap() > 1 << 20, "{list}");

    // Errors change nothing and say what is wrong.
    let err = env.fails(&["snapshot", "revert", "snap", "nosuch"]);
    assert!(err.contains("no snapshot named \"nosuch\""), "{err}");
    assert_eq!(
        env.state("snap"),
        "running",
        "a failed revert does not leave the VM paused"
    );
    let err = env.fails(&["snapshot", "create", "snap", "s1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["snapshot", "delete", "snap", "nosuch"]);
    assert!(err.contains("no snapshot named"), "{err}");
    let err = env.fails(&["snapshot", "create", "snap", "../x"]);
    assert!(err.contains("bad snapshot name"), "{err}");

    // A disk-only snapshot of a running VM cannot be reverted live.
    env.ok(&["snapshot", "create", "snap", "disks", "--no-memory"]);
    let err = env.fails(&["snapshot", "revert", "snap", "disks"]);
    assert!(err.contains("holds no memory"), "{err}");

    env.ok(&["snapshot", "delete", "snap", "s1"]);
    env.ok(&["snapshot", "delete", "snap", "disks"]);
    assert_eq!(env.json(&["snapshot", "list", "snap"]).as_array().unwrap().len(), 0);
    env.ok(&["vm", "stop", "snap", "--force"]);
}

#[test]
fn stopped_vm_snapshot_brings_back_disk() {
    let env = Env::new();
    env.boot_guest("cold", "");
    let mut con = env.console("cold");
    write_at(&mut con, 0, "COLD-A");
    drop(con);
    env.ok(&["vm", "stop", "cold"]);

    let s = env.json(&["snapshot", "create", "cold", "base"]);
    assert_eq!(s["memory"], false, "a stopped VM has no memory to save: {s}");

    env.ok(&["vm", "start", "cold"]);
    env.wait_ready("cold", 2);
    let mut con = env.console("cold");
    assert_eq!(read_at(&mut con, 0), "COLD-A");
    write_at(&mut con, 0, "COLD-B");
    drop(con);
    env.ok(&["vm", "stop", "cold"]);

    // Reverting a non-existent snapshot changes nothing.
    let before = tree_digest(&env.data_dir());
    let err = env.fails(&["snapshot", "revert", "cold", "nosuch"]);
    assert!(err.contains("no snapshot named"), "{err}");
    assert_eq!(tree_digest(&env.data_dir()), before);

    env.ok(&["snapshot", "revert", "cold", "base"]);
    env.ok(&["vm", "start", "cold"]);
    env.wait_ready("cold", 3);
    let mut con = env.console("cold");
    assert_eq!(read_at(&mut con, 0), "COLD-A");
    drop(con);
    env.ok(&["vm", "stop", "cold", "--force"]);
}
