//! Lifecycle benchmarks (prints figures; not a pass/fail test).
//!
//! - start latency: `corral vm start` from the call until it returns (QMP answered), against
//!   spawning the identical QEMU command line directly and polling its monitor the same way;
//! - list latency: `corral vm list --json` with 200 defined VMs, 10 of them running.
//!
//! Run: `cargo bench -p corral --bench lifecycle` (release build; boots real TCG guests).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, Env};

fn stats(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = ms[ms.len() / 2];
    let p90 = ms[(ms.len() * 9 / 10).min(ms.len() - 1)];
    println!(
        "{name:<44} median {med:7.1} ms   p90 {p90:7.1} ms   min {:7.1} ms   (n={})",
        ms[0],
        ms.len()
    );
    med
}

/// Spawns QEMU with `argv` and waits until its monitor on `sock` is ready, polling every
/// 2 ms exactly as corral does. The child is returned: the caller kills and waits for it.
#[allow(clippy::zombie_processes)]
fn direct_start(argv: &[String], sock: &std::path::Path) -> (f64, std::process::Child) {
    let t0 = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Ok(mut s) = UnixStream::connect(sock) {
            // Ready means what it means for corral: greeting read, capabilities negotiated.
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("QMP"), "{line}");
            s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("return"), "{line}");
            return (t0.elapsed().as_secs_f64() * 1000.0, child);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn start_latency() {
    let env = Env::new();
    env.create_guest("bench", "");
    let rounds = 10;
    let mut corral = vec![];
    let mut direct = vec![];
    let argv = env.argv("bench");
    let run = env.vm_run("bench");
    for _ in 0..rounds {
        let t0 = Instant::now();
        env.ok(&["vm", "start", "bench"]);
        corral.push(t0.elapsed().as_secs_f64() * 1000.0);
        env.ok(&["vm", "kill", "bench"]);

        std::fs::create_dir_all(&run).unwrap();
        let (ms, mut child) = direct_start(&argv, &run.join("qmp.sock"));
        direct.push(ms);
        let _ = child.kill();
        let _ = child.wait();
        for f in ["qmp.sock", "status.sock", "serial.sock", "qemu.pid"] {
            let _ = std::fs::remove_file(run.join(f));
        }
    }
    println!("start latency (TCG guest, {rounds} rounds each)");
    let c = stats("  corral vm start (call → QMP ready)", corral);
    let d = stats("  same QEMU argv, direct (spawn → QMP ready)", direct);
    println!(
        "  overhead of corral (median difference): {:.1} ms   [goal: <= 50 ms]",
        c - d
    );
}

fn list_latency() {
    let env = Env::new();
    let g = guest();
    let specs = env.dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    for i in 0..200 {
        let p = specs.join(format!("vm{i:03}.toml"));
        std::fs::write(
            &p,
            format!(
                "name = \"vm{i:03}\"\nmemory = \"128M\"\naccel = \"tcg\"\ntags = [\"bench\"]\n[boot]\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"console=ttyS0 quiet panic=-1\"\n[display]\nmode = \"none\"\n[network]\nmode = \"none\"\n",
                g.kernel.display(),
                g.initrd.display()
            ),
        )
        .unwrap();
        env.ok(&["vm", "define", p.to_str().unwrap()]);
    }
    for i in 0..10 {
        env.ok(&["vm", "start", &format!("vm{:03}", i * 20)]);
    }
    // Measure against idle guests, not ten TCG boots competing for two cores.
    for i in 0..10 {
        env.wait_ready(&format!("vm{:03}", i * 20), 1);
    }
    let mut ms = vec![];
    for _ in 0..30 {
        let t0 = Instant::now();
        let out = env.ok(&["vm", "list", "--json"]);
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let running = v.as_array().unwrap().iter().filter(|x| x["state"] == "running").count();
        assert_eq!((v.as_array().unwrap().len(), running), (200, 10));
    }
    println!("list latency (200 defined VMs, 10 running)");
    stats("  corral vm list --json", ms);
    println!("  [goal: < 50 ms]");
    let _ = env.json(&["host", "stop-all", "--timeout", "1s"]);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful: run only
    // under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    start_latency();
    list_latency();
}
