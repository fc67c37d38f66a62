//! Linked and full clones with real QEMU and the test guest: two linked clones of one base run
//! at the same time without seeing each other's writes or changing the base; full clones are
//! independent copies; a source with linked clones cannot be deleted.

mod common;

use std::path::PathBuf;

use common::{file_hash, layers, pattern_at, qemu_io, raw_bytes, read_at, tree_digest, write_at, Env};

#[test]
fn linked_clones_run_together_apart_and_protect_their_base() {
    let env = Env::new();
    env.create_guest("gold", "");
    let gold_disk = layers(&env, "gold")[0].clone();
    qemu_io(&gold_disk, "write -P 0x47 4096 32"); // "GGGG…" at sector 8

    let c1 = env.json(&["vm", "clone", "gold", "c1", "--linked"]);
    let c2 = env.json(&["vm", "clone", "gold", "c2", "--linked"]);
    let base = PathBuf::from(c1["disks"][0]["base"].as_str().unwrap());
    assert_eq!(c1["linked"], true);
    assert_eq!(base, gold_disk, "the source's disk became the base");
    assert_eq!(
        c2["disks"][0]["base"], c1["disks"][0]["base"],
        "a stopped, unchanged source gives the second clone the same base (no chain growth)"
    );
    assert_eq!(layers(&env, "gold").len(), 2, "gold itself moved onto an overlay");
    let base_hash = file_hash(&base);

    // New identity for each clone.
    let show = |vm: &str| env.json(&["vm", "show", vm]);
    let (g, s1, s2) = (show("gold"), show("c1"), show("c2"));
    for (a, b) in [(&g, &s1), (&g, &s2), (&s1, &s2)] {
        assert_ne!(a["spec"]["uuid"], b["spec"]["uuid"]);
        assert_ne!(a["spec"]["network"]["mac"], b["spec"]["network"]["mac"]);
    }

    // Both clones boot at the same time and write their own data.
    env.ok(&["vm", "start", "c1"]);
    env.ok(&["vm", "start", "c2"]);
    env.wait_ready("c1", 1);
    env.wait_ready("c2", 1);
    let mut k1 = env.console("c1");
    let mut k2 = env.console("c2");
    assert!(read_at(&mut k1, 8).starts_with("GGGG"), "clone sees the base's data");
    assert!(read_at(&mut k2, 8).starts_with("GGGG"));
    write_at(&mut k1, 0, "CLONE-ONE");
    write_at(&mut k2, 0, "CLONE-TWO");
    write_at(&mut k1, 8, "C1-OVER-BASE");
    assert_eq!(read_at(&mut k1, 0), "CLONE-ONE");
    assert_eq!(read_at(&mut k2, 0), "CLONE-TWO", "c2 does not see c1's write");
    assert!(read_at(&mut k2, 8).starts_with("GGGG"), "c1's overwrite stays in c1");
    assert_eq!(file_hash(&base), base_hash, "the base is unchanged while clones run");

    // The base is listed with its two clones; it cannot be merged into or deleted.
    let images = env.json(&["image", "list"]);
    let img = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == base.to_str().unwrap())
        .unwrap_or_else(|| panic!("{images}"));
    assert_eq!(img["clones"], 2, "{images}");
    assert_eq!(img["owner"], "gold");
    let before = tree_digest(&env.data_dir());
    let out = env.run(&["vm", "delete", "gold"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 linked clones") && err.contains("c1, c2"), "{err}");
    let err = env.fails(&["disk", "commit", "c1"]);
    assert!(err.contains("base image") && err.contains("--full"), "{err}");
    // Bad clone requests.
    let err = env.fails(&["vm", "clone", "gold", "c1", "--linked"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["vm", "clone", "gold", "c3", "--from-snapshot", "nosuch"]);
    assert!(err.contains("no snapshot named \"nosuch\""), "{err}");
    let out = env.run(&["vm", "clone", "c1", "c3"]);
    assert_eq!(out.status.code(), Some(3), "a full copy of a running VM is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from-snapshot"));
    let err = env.fails(&["vm", "clone", "nosuch", "c3"]);
    assert!(err.contains("no VM named nosuch"), "{err}");
    let err = env.fails(&["vm", "clone", "gold", "bad/name"]);
    assert!(err.contains("invalid VM name"), "{err}");
    let err = env.fails(&["vm", "clone", "gold", "c3", "--linked", "--full"]);
    assert!(err.contains("cannot be used with"), "{err}");
    assert_eq!(tree_digest(&env.data_dir()), before, "refusals changed nothing");

    // A saved VM's memory would resume on the layer that became the base: refused.
    drop(k2);
    env.ok(&["vm", "save", "c2"]);
    let before = tree_digest(&env.data_dir());
    let out = env.run(&["vm", "clone", "c2", "c3", "--linked"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("saved memory"));
    assert_eq!(tree_digest(&env.data_dir()), before);
    env.ok(&["vm", "start", "c2"]);
    let mut k2 = env.console("c2");
    assert_eq!(read_at(&mut k2, 0), "CLONE-TWO", "c2 resumed with its data");

    drop((k1, k2));
    env.ok(&["vm", "stop", "c1"]);
    env.ok(&["vm", "stop", "c2"]);
    assert_eq!(
        file_hash(&base),
        base_hash,
        "the base is unchanged after the clones ran"
    );

    // A full clone is an independent, flat copy of c1 as it is.
    let f = env.json(&["vm", "clone", "c1", "f1", "--full"]);
    assert_eq!(f["linked"], false);
    assert_eq!(layers(&env, "f1").len(), 1, "flattened");
    let f1 = layers(&env, "f1")[0].clone();
    assert!(
        !pattern_at(&f1, 4096, 32, 0x47),
        "c1's overwrite of sector 8 came along"
    );
    assert!(
        raw_bytes(&env, &f1).starts_with(b"CLONE-ONE"),
        "full clone holds c1's data"
    );
    // A linked clone from an internal snapshot exports that snapshot once, as a new base.
    env.ok(&["snapshot", "create", "c2", "golden"]);
    let l = env.json(&["vm", "clone", "c2", "l1", "--linked", "--from-snapshot", "golden"]);
    let sbase = PathBuf::from(l["disks"][0]["base"].as_str().unwrap());
    assert!(sbase.file_name().unwrap().to_str().unwrap().contains("@golden"), "{l}");
    let l2 = env.json(&["vm", "clone", "c2", "l2", "--linked", "--from-snapshot", "golden"]);
    assert_eq!(l2["disks"][0]["base"], l["disks"][0]["base"], "exported once, reused");
    assert!(
        raw_bytes(&env, &layers(&env, "l1")[0]).starts_with(b"CLONE-TWO"),
        "l1 holds c2's data as at the snapshot"
    );

    // Deleting clones releases the bases; then the source can go.
    let out = env.run(&["vm", "delete", "c2"]);
    assert_eq!(out.status.code(), Some(3), "c2 has l1 and l2");
    for vm in ["l1", "l2", "c2", "c1"] {
        env.ok(&["vm", "delete", vm]);
    }
    assert_eq!(file_hash(&base), base_hash);
    env.ok(&["vm", "delete", "gold"]);
    assert!(!base.exists(), "the base went with its owner");
    assert_eq!(env.json(&["image", "list"]).as_array().unwrap().len(), 0);
    env.ok(&["vm", "delete", "f1"]);
    let left: Vec<_> = std::fs::read_dir(env.data_dir().join("vms"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "every VM directory is gone: {left:?}");
}

/// A VM defined over an image outside the data dir (`path = …`) that never ran: it can be
/// backed up, and linked-cloned twice onto one base (the external image, frozen once).
#[test]
fn external_image_that_never_ran_clones_onto_one_base_and_backs_up() {
    let env = Env::new();
    let img = env.dir_path().join("outside.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(ok.success());
    qemu_io(&img, "write -P 0x5a 0 1M");
    let spec = env.dir_path().join("ext.toml");
    std::fs::write(
        &spec,
        format!("name = \"ext\"\n[[disks]]\npath = \"{}\"\n", img.display()),
    )
    .unwrap();
    env.ok(&["vm", "define", spec.to_str().unwrap()]);
    let b = env.json(&["backup", "run", "ext"]);
    assert_eq!(b[0]["kind"], "full");
    assert_eq!(b[0]["stats"]["bytes_read"], 1 << 20);
    let c1 = env.json(&["vm", "clone", "ext", "e1", "--linked"]);
    let c2 = env.json(&["vm", "clone", "ext", "e2", "--linked"]);
    assert_eq!(PathBuf::from(c1["disks"][0]["base"].as_str().unwrap()), img);
    assert_eq!(
        c2["disks"][0]["base"], c1["disks"][0]["base"],
        "the second clone reuses the base"
    );
    assert_eq!(
        layers(&env, "ext").len(),
        2,
        "one overlay on the external image, not two"
    );
    assert!(pattern_at(&layers(&env, "e2")[0], 0, 1 << 20, 0x5a));
}
