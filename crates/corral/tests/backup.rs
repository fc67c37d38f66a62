//! Backups with the real guest: a live full backup, a live incremental, a stopped
//! incremental through qemu-storage-daemon, and the fallback to a full read after QEMU was
//! killed; every backup restores to exactly the disk as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layers, Env};

fn write_at(con: &mut common::Console, sector: u32, text: &str) {
    con.ok(&format!(
        "printf '%-32s' {text} | dd of=/dev/vda bs=512 seek={sector} count=1 conv=sync,notrunc oflag=direct 2>/dev/null; sync"
    ));
}

/// `qemu-img compare`: whether two images read the same (`-U`: one may be in use).
fn same(a: &Path, b: &Path) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "qemu-img compare {} {}: {}{}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn raw(env: &Env, img: &Path) -> Vec<u8> {
    let out = env.dir_path().join("view.raw");
    let _ = std::fs::remove_file(&out);
    assert!(Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(img)
        .arg(&out)
        .status()
        .unwrap()
        .success());
    std::fs::read(&out).unwrap()
}

fn restore(env: &Env, id: &str, name: &str) -> PathBuf {
    env.ok(&["backup", "restore", id, "--as", name]);
    layers(env, name)[0].clone()
}

#[test]
fn live_full_incremental_stopped_and_after_kill() {
    let env = Env::new();
    env.boot_guest("bk", "");
    let disk = layers(&env, "bk")[0].clone();
    let mut con = env.console("bk");
    write_at(&mut con, 0, "FULL-1");
    write_at(&mut con, 2048, "KEEP");

    let full = env.json(&["backup", "run", "bk"]);
    assert_eq!(full[0]["kind"], "full", "{full}");
    let full_id = full[0]["id"].as_str().unwrap().to_string();
    assert_eq!(env.state("bk"), "running", "the guest ran through the backup");

    write_at(&mut con, 0, "INCR-2");
    write_at(&mut con, 4096, "NEW-3");
    let inc = env.json(&["backup", "run", "bk"]);
    assert_eq!(inc[0]["kind"], "incremental", "{inc}");
    let inc_id = inc[0]["id"].as_str().unwrap().to_string();
    let stats = &inc[0]["stats"];
    assert!(stats["parent_chunks"].as_u64().unwrap() > 0, "{inc}");
    assert!(
        stats["bytes_read"].as_u64().unwrap() <= 4 * 65536,
        "only the changed chunks were read: {inc}"
    );

    let list = env.json(&["backup", "list", "bk"]);
    let kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "incremental"], "oldest first: {list}");
    assert!(list[0]["time"].as_str().unwrap().contains('T'), "RFC 3339: {list}");

    // Each backup is its point in time.
    let r1 = raw(&env, &restore(&env, &full_id, "r1"));
    assert!(r1.starts_with(b"FULL-1"));
    assert!(r1[2048 * 512..].starts_with(b"KEEP"));
    assert!(
        r1[4096 * 512..4096 * 512 + 32].iter().all(|b| *b == 0),
        "NEW-3 came later"
    );
    let r2 = restore(&env, &inc_id, "r2");
    let r2b = raw(&env, &r2);
    assert!(r2b.starts_with(b"INCR-2"));
    assert!(r2b[2048 * 512..].starts_with(b"KEEP"));
    assert!(r2b[4096 * 512..].starts_with(b"NEW-3"));

    // Stopped: the same read path through qemu-storage-daemon, still incremental.
    drop(con);
    env.ok(&["vm", "stop", "bk"]);
    // (Compared once QEMU has closed the image: until then its metadata cache may hold the
    // newest clusters, and only QEMU's own reads, like the backup's, see them.)
    assert!(
        same(&disk, &r2),
        "the incremental restores to the disk as the guest left it"
    );
    common::qemu_io(&disk, "write -P 0x77 3M 64k");
    let cold = env.json(&["backup", "run", "bk"]);
    assert_eq!(cold[0]["kind"], "incremental", "{cold}");
    let r3 = restore(&env, cold[0]["id"].as_str().unwrap(), "r3");
    assert!(same(&disk, &r3));

    // QEMU killed: its bitmap is inconsistent, so the next backup reads in full.
    env.ok(&["vm", "start", "bk"]);
    env.wait_ready("bk", 2);
    let mut con = env.console("bk");
    write_at(&mut con, 8192, "AFTER-KILL");
    drop(con);
    env.ok(&["vm", "kill", "bk"]);
    let after = env.json(&["backup", "run", "bk"]);
    // What a killed QEMU had not written back is lost to everyone; the backup must match
    // what the image holds now.
    assert_eq!(after[0]["kind"], "full", "{after}");
    assert!(
        after[0]["fell_back"].as_str().unwrap().contains("inconsistent"),
        "{after}"
    );
    let r4 = restore(&env, after[0]["id"].as_str().unwrap(), "r4");
    assert!(same(&disk, &r4), "the fallback backup is bit-identical");

    // Bad input changes nothing.
    let before = common::tree_digest(&env.data_dir());
    let err = env.fails(&["backup", "restore", "nosuch", "--as", "r5"]);
    assert!(err.contains("backup list"), "{err}");
    let err = env.fails(&["backup", "restore", &full_id, "--as", "r1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["backup", "run", "nosuch"]);
    assert!(err.contains("no VM named nosuch"), "{err}");
    assert_eq!(common::tree_digest(&env.data_dir()), before);
}
