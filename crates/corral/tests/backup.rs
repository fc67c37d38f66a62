//! Backups with the real guest: a live full backup, a live incremental, a stopped
//! incremental through qemu-storage-daemon, and the fallback to a full read after QEMU was
//! killed; every backup restores to exactly the disk as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layers, raw_bytes, same, write_at, Env};

/// The persistent bitmaps in a qcow2 image.
fn image_bitmaps(img: &Path) -> Vec<String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["format-specific"]["data"]["bitmaps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
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
    // Each backup ran as a job (progress for the CLI's bar, readable by anyone afterwards).
    let jobs = env.json(&["job", "list", "--vm", "bk"]);
    let backups: Vec<_> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup")
        .collect();
    assert_eq!(backups.len(), 2, "{jobs}");
    assert!(
        backups
            .iter()
            .all(|j| j["state"] == "succeeded" && j["done"] == j["total"]),
        "{jobs}"
    );

    // Each backup is its point in time.
    let r1 = raw_bytes(&env, &restore(&env, &full_id, "r1"));
    assert!(r1.starts_with(b"FULL-1"));
    assert!(r1[2048 * 512..].starts_with(b"KEEP"));
    assert!(
        r1[4096 * 512..4096 * 512 + 32].iter().all(|b| *b == 0),
        "NEW-3 came later"
    );
    let r2 = restore(&env, &inc_id, "r2");
    let r2b = raw_bytes(&env, &r2);
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

    assert_eq!(
        image_bitmaps(&disk),
        vec![format!("corral-{}", after[0]["id"].as_str().unwrap())],
        "the full read retired the inconsistent bitmap; one chain remains"
    );

    // Skeleton: the system disk is stored; a data disk comes back empty at its size.
    env.ok(&[
        "disk", "add", "bk", "--size", "16M", "--role", "data", "--name", "data1",
    ]);
    let data1 = env.json(&["vm", "show", "bk"])["spec"]["disks"][1]["path"]
        .as_str()
        .unwrap()
        .to_string();
    common::qemu_io(Path::new(&data1), "write -P 0x66 0 1M");
    let sk = env.json(&["backup", "run", "bk", "--skeleton"]);
    assert_eq!(sk[0]["kind"], "skeleton", "{sk}");
    env.ok(&["backup", "restore", sk[0]["id"].as_str().unwrap(), "--as", "r5"]);
    let r5 = env.json(&["vm", "show", "r5"]);
    let r5_system = PathBuf::from(r5["spec"]["disks"][0]["path"].as_str().unwrap());
    let r5_data = PathBuf::from(r5["spec"]["disks"][1]["path"].as_str().unwrap());
    assert!(same(&disk, &r5_system), "the system disk is in the skeleton");
    let data_raw = raw_bytes(&env, &r5_data);
    assert_eq!(data_raw.len(), 16 << 20, "the data disk has its recorded size");
    assert!(data_raw.iter().all(|b| *b == 0), "and comes back empty");
    // Selection: --all minus the restored copies is just bk. data1 is new since the last
    // full read, so this one reads in full; the one after is incremental again (the
    // skeleton started no chain of its own).
    let all_but = |extra: &[&str]| {
        let mut a = vec!["backup", "run", "--all"];
        for r in ["r1", "r2", "r3", "r4", "r5"] {
            a.extend(["--exclude", r]);
        }
        a.extend_from_slice(extra);
        env.json(&a)
    };
    let f = all_but(&[]);
    assert_eq!(f.as_array().unwrap().len(), 1, "{f}");
    assert_eq!(
        (f[0]["vm"].as_str(), f[0]["kind"].as_str()),
        (Some("bk"), Some("full")),
        "{f}"
    );
    let i = all_but(&[]);
    assert_eq!(i[0]["kind"], "incremental", "{i}");
    assert_eq!(i[0]["stats"]["bytes_read"], 0, "nothing changed: {i}");

    // Verify passes; prune keeps the newest two; gc frees what only the others used.
    let v = env.json(&["backup", "verify", "--all"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    let pruned = env.json(&["backup", "prune", "bk", "--keep-last", "2"]);
    let removed = pruned
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"]["keep"] == false)
        .count();
    assert_eq!(removed, 5, "{pruned}");
    assert_eq!(env.json(&["backup", "list", "bk"]).as_array().unwrap().len(), 2);
    let gc = env.json(&["store", "gc"]);
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    let latest = i[0]["id"].as_str().unwrap().to_string();
    let r6 = restore(&env, &latest, "r6");
    assert!(
        same(&disk, &r6),
        "the kept backup restores after gc (its parent is gone)"
    );

    // Drills: a restored copy that boots to its ready line passes; one waiting for a line
    // the guest never prints fails; neither leaves a VM behind.
    let show = env.json(&["backup", "show", &latest]);
    assert_eq!(show["kind"], "incremental", "{show}");
    let d = env.json(&[
        "backup",
        "drill",
        &latest,
        "--expect-line",
        "CORRAL-GUEST-READY",
        "--timeout",
        "90s",
    ]);
    assert_eq!(d["passed"], true, "{d}");
    let out = env.run(&[
        "backup",
        "drill",
        &latest,
        "--expect-line",
        "NEVER-PRINTED",
        "--timeout",
        "4s",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    let out = env.run(&["backup", "drill", &latest]);
    assert_eq!(out.status.code(), Some(2), "no agent and no --expect-line");
    let names: Vec<String> = env
        .json(&["vm", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("drill-")), "{names:?}");

    // One flipped byte in a pack: verify names the backups, restore refuses to write it.
    let packs = env.data_dir().join("backups");
    let mut biggest: Option<(u64, PathBuf)> = None;
    for e in common::walk_files(&packs) {
        let len = std::fs::metadata(&e).unwrap().len();
        if e.extension().map(|x| x == "pack").unwrap_or(false) && biggest.as_ref().map(|b| len > b.0).unwrap_or(true) {
            biggest = Some((len, e));
        }
    }
    let (len, pack) = biggest.expect("a pack file");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(len / 2) as usize] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    let out = env.run(&["backup", "verify", "--all"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&latest) || text.contains("used by backup"), "{text}");
    let err = env.fails(&["backup", "restore", &latest, "--as", "r7"]);
    assert!(
        err.contains(&latest) && err.contains("disk0") && err.contains("offset"),
        "names the backup, disk and offset: {err}"
    );
    assert!(
        env.run(&["vm", "show", "r7"]).status.code() == Some(2),
        "no VM r7 was left behind"
    );

    // Bad input changes nothing.
    let before = common::tree_digest(&env.data_dir());
    let err = env.fails(&["backup", "restore", "nosuch", "--as", "r5"]);
    assert!(err.contains("backup list"), "{err}");
    let err = env.fails(&["backup", "restore", &latest, "--as", "r1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["backup", "run", "nosuch"]);
    assert!(err.contains("no VM named nosuch"), "{err}");
    let err = env.fails(&["backup", "run", "--tag", "nosuch"]);
    assert!(err.contains("no VM has the tag"), "{err}");
    let out = env.run(&["backup", "run"]);
    assert_eq!(out.status.code(), Some(2), "nothing selected");
    assert_eq!(common::tree_digest(&env.data_dir()), before);
}
