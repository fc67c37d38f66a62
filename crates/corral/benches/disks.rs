//! Disk-layer benchmarks (prints figures; not a pass/fail test).
//!
//! - linked clone creation: `corral vm clone SRC NEW --linked`, end to end, for the first
//!   clone (which freezes the source's disk) and for later ones (which reuse the base);
//! - snapshot create and revert of a running 512 MiB TCG guest with 256 MiB of its memory
//!   filled, so the saved state is not mostly zero pages;
//! - full clone throughput of a 2 GiB image with 2 GiB of data, against the same
//!   `qemu-img convert` run directly.
//!
//! Run: `cargo bench -p corral --bench disks` (release build; boots a real TCG guest).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use common::{guest, layers, qemu_io, Env};

fn stats(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = ms[ms.len() / 2];
    println!(
        "{name:<48} median {med:8.1} ms   min {:8.1} ms   max {:8.1} ms   (n={})",
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
    med
}

fn timed(env: &Env, args: &[&str]) -> f64 {
    let t0 = Instant::now();
    env.ok(args);
    t0.elapsed().as_secs_f64() * 1000.0
}

fn linked_clone() {
    let env = Env::new();
    env.create_guest("src", "");
    let disk = layers(&env, "src")[0].clone();
    qemu_io(&disk, "write -P 0x11 0 32M");
    let first = timed(&env, &["vm", "clone", "src", "c0", "--linked"]);
    println!("{:<48} {first:8.1} ms", "linked clone, first (freezes the source disk)");
    let later: Vec<f64> = (1..=20)
        .map(|i| timed(&env, &["vm", "clone", "src", &format!("c{i}"), "--linked"]))
        .collect();
    stats("linked clone, later (reuses the base)", later);
    let full: Vec<f64> = (1..=5)
        .map(|i| timed(&env, &["vm", "clone", "src", &format!("f{i}"), "--full"]))
        .collect();
    stats("full clone of the same 64M disk (for scale)", full);
}

fn snapshot_running() {
    let env = Env::new();
    let g = guest();
    let spec = env.dir_path().join("big.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"big\"\nmemory = \"512M\"\n[[disks]]\nsize = \"64M\"\n[boot]\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"console=ttyS0 quiet panic=-1\"\n[display]\nmode = \"none\"\n",
            g.kernel.display(),
            g.initrd.display()
        ),
    )
    .unwrap();
    env.ok(&["vm", "define", spec.to_str().unwrap()]);
    env.ok(&["vm", "start", "big"]);
    env.wait_ready("big", 1);
    let mut con = env.console("big");
    // The guest's root is a RAM file system: a file there is guest memory.
    con.ok("dd if=/dev/urandom of=/fill bs=1M count=256 2>/dev/null; echo filled");
    drop(con);
    let mut create = vec![];
    let mut revert = vec![];
    let mut state = 0;
    for i in 0..3 {
        let name = format!("s{i}");
        create.push(timed(&env, &["snapshot", "create", "big", &name]));
        let list = env.json(&["snapshot", "list", "big"]);
        state = list.as_array().unwrap().last().unwrap()["vm_state_size"]
            .as_u64()
            .unwrap();
        revert.push(timed(&env, &["snapshot", "revert", "big", &name]));
    }
    println!("running 512M guest, 256M filled: vm state {} MiB", state >> 20);
    stats("snapshot create (disk + memory)", create);
    stats("snapshot revert (disk + memory)", revert);
    env.ok(&["vm", "kill", "big"]);
}

fn full_clone_throughput() {
    let env = Env::new();
    env.create_guest("data", "");
    let disk = layers(&env, "data")[0].clone();
    let ok = Command::new("qemu-img")
        .arg("resize")
        .arg(&disk)
        .arg("2G")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    qemu_io(&disk, "write -P 0x5c 0 1G");
    qemu_io(&disk, "write -P 0x5c 1G 1G");
    let size = 2u64 << 30;
    let direct_out = env.dir_path().join("direct.qcow2");
    let mut direct = vec![];
    let mut corral = vec![];
    // Each copy is timed until its data is on disk (the run plus a `sync`), and the order
    // alternates: a copy that follows another pays for its writeback, whoever runs it.
    for i in 0..4 {
        let run_direct = |out: &mut Vec<f64>| {
            let _ = std::fs::remove_file(&direct_out);
            sync();
            let t0 = Instant::now();
            let ok = Command::new("qemu-img")
                .args(["convert", "-O", "qcow2"])
                .arg(&disk)
                .arg(&direct_out)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            sync();
            out.push(t0.elapsed().as_secs_f64() * 1000.0);
        };
        let run_corral = |out: &mut Vec<f64>| {
            sync();
            let t0 = Instant::now();
            env.ok(&["vm", "clone", "data", &format!("full{i}"), "--full"]);
            sync();
            out.push(t0.elapsed().as_secs_f64() * 1000.0);
            env.ok(&["vm", "delete", &format!("full{i}")]);
        };
        if i % 2 == 0 {
            run_direct(&mut direct);
            run_corral(&mut corral);
        } else {
            run_corral(&mut corral);
            run_direct(&mut direct);
        }
    }
    let d = stats("qemu-img convert directly, 2 GiB", direct);
    let c = stats("corral vm clone --full, 2 GiB", corral);
    let mib = |ms: f64| (size >> 20) as f64 / (ms / 1000.0);
    println!(
        "throughput: qemu-img {:.0} MiB/s, corral {:.0} MiB/s, ratio {:.2}x (goal >= 0.9x)",
        mib(d),
        mib(c),
        d / c
    );
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` builds benches; run them only under `cargo bench`
    }
    linked_clone();
    full_clone_throughput();
    snapshot_running();
}
