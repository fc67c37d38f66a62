//! External overlays, live and offline commit, the consolidation policy, and the VM lock for
//! disk-layer operations, with real QEMU, qemu-img and the test guest.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{file_hash, layers, pattern_at, qemu_io, raw_bytes, read_at, tree_digest, wait_for, write_at, Env};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A bare QMP client, standing in for a corral process that dies in the middle of a job.
struct RawQmp {
    r: std::io::BufReader<std::os::unix::net::UnixStream>,
    w: std::os::unix::net::UnixStream,
}

impl RawQmp {
    fn connect(sock: &Path) -> RawQmp {
        let w = std::os::unix::net::UnixStream::connect(sock).unwrap();
        let mut q = RawQmp {
            r: std::io::BufReader::new(w.try_clone().unwrap()),
            w,
        };
        let mut greeting = String::new();
        std::io::BufRead::read_line(&mut q.r, &mut greeting).unwrap();
        q.cmd(r#"{"execute":"qmp_capabilities"}"#);
        q
    }

    /// Sends one command and returns its reply (events in between are skipped).
    fn cmd(&mut self, line: &str) -> serde_json::Value {
        use std::io::{BufRead, Write};
        writeln!(self.w, "{line}").unwrap();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v.get("return").is_some() || v.get("error").is_some() {
                return v;
            }
        }
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn live_overlay_and_commit_keep_the_guest_running() {
    let env = Env::new();
    // noacpid: `vm stop` then waits out its timeout, which gives the lock test a slow holder.
    env.boot_guest("lc", "corral.noacpid");
    let mut con = env.console("lc");
    write_at(&mut con, 0, "BASE-1");
    let base = layers(&env, "lc")[0].clone();

    let made = env.json(&["disk", "overlay", "lc"]);
    assert_eq!(made[0]["layers"].as_array().unwrap().len(), 2, "{made}");
    let chain = layers(&env, "lc");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], base);
    assert_eq!(mode(&base), 0o444, "the backing file is read-only");
    let base_hash = file_hash(&base);

    // Snapshots of the running VM follow the disk onto its new top layer.
    env.ok(&["snapshot", "create", "lc", "on-overlay"]);
    env.ok(&["snapshot", "delete", "lc", "on-overlay"]);

    // Writes now land in the overlay, not in the base.
    write_at(&mut con, 100, "OVERLAY-2");
    assert_eq!(file_hash(&base), base_hash, "the base took no writes");
    assert!(std::fs::metadata(&chain[0]).unwrap().len() > 0);

    let report = env.json(&["disk", "commit", "lc"]);
    assert_eq!(report[0]["live"], true, "{report}");
    assert_eq!(env.state("lc"), "running", "the guest kept running");
    assert_eq!(layers(&env, "lc"), vec![base.clone()], "chain is back to one image");
    assert!(!chain[0].exists(), "the merged overlay was removed");
    assert_eq!(mode(&base), 0o600, "the base is writable again");
    // The guest still sees both, and the base file itself now holds the overlay's data.
    assert_eq!(read_at(&mut con, 0), "BASE-1");
    assert_eq!(read_at(&mut con, 100), "OVERLAY-2");
    let bytes = raw_bytes(&env, &base);
    assert!(
        bytes[100 * 512..].starts_with(b"OVERLAY-2"),
        "committed data is in the base"
    );
    // Snapshots still work after the merge moved the device onto another node.
    env.ok(&["snapshot", "create", "lc", "after-merge", "--no-memory"]);
    env.ok(&["snapshot", "delete", "lc", "after-merge"]);
    // The guest keeps writing to the merged image.
    write_at(&mut con, 200, "AFTER-3");
    assert_eq!(read_at(&mut con, 200), "AFTER-3");

    // A commit whose corral died mid-way leaves a QEMU job waiting in `ready` and the node
    // busy. Made here for real by another QMP client that walks away; the next commit must
    // clean it up and merge.
    env.ok(&["disk", "overlay", "lc"]);
    write_at(&mut con, 300, "LEFTOVER-4");
    {
        let mut q = RawQmp::connect(&env.vm_run("lc").join("qmp.sock"));
        let blocks = q.cmd(r#"{"execute":"query-block"}"#);
        let top = blocks["return"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["qdev"].as_str().unwrap_or("").contains("disk0"))
            .unwrap()["inserted"]["node-name"]
            .as_str()
            .unwrap()
            .to_string();
        let r = q.cmd(&format!(
            r#"{{"execute":"block-commit","arguments":{{"job-id":"corral-commit-disk0-1","device":"{top}"}}}}"#
        ));
        assert!(r.get("return").is_some(), "{r}");
        wait_for(Duration::from_secs(20), || {
            q.cmd(r#"{"execute":"query-jobs"}"#)["return"][0]["status"] == "ready"
        })
        .unwrap();
    } // the client goes away with the job still in QEMU
    let report = env.json(&["disk", "commit", "lc"]);
    assert_eq!(report[0]["live"], true, "{report}");
    assert_eq!(layers(&env, "lc"), vec![base.clone()]);
    assert_eq!(read_at(&mut con, 300), "LEFTOVER-4");

    // Bad input changes nothing.
    let before = tree_digest(&env.data_dir());
    let out = env.run(&["disk", "commit", "lc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none of its disks has an overlay"), "{err}");
    let err = env.fails(&["disk", "commit", "lc", "disk0"]);
    assert!(err.contains("disk disk0 has no overlay to merge"), "{err}");
    let err = env.fails(&["disk", "commit", "lc", "nosuch"]);
    assert!(
        err.contains("no disk named \"nosuch\"") && err.contains("disk0"),
        "{err}"
    );
    let err = env.fails(&["disk", "overlay", "lc", "nosuch"]);
    assert!(err.contains("no disk named"), "{err}");
    assert_eq!(tree_digest(&env.data_dir()), before);

    // Snapshot, commit, overlay and clone all take the VM lock: a slow stop holds it.
    let mut slow = env
        .cmd()
        .args(["vm", "stop", "lc", "--timeout", "30s"])
        .spawn()
        .unwrap();
    let lockfile = env.run_dir().join("locks/lc.lock");
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&lockfile)
            .map(|t| t.contains("stop"))
            .unwrap_or(false)
    })
    .unwrap();
    let busy = format!("VM lc is busy: stop by pid {}", slow.id());
    for args in [
        &["snapshot", "create", "lc", "s1"][..],
        &["snapshot", "delete", "lc", "s1"],
        &["disk", "overlay", "lc"],
        &["disk", "commit", "lc"],
        &["vm", "clone", "lc", "lc2", "--linked"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&busy), "{args:?}: {err}");
    }
    let _ = kill(Pid::from_raw(slow.id() as i32), Signal::SIGKILL);
    let _ = slow.wait();
    drop(con);
    env.ok(&["vm", "kill", "lc"]);

    // Offline: qemu-img commit, and a merge that would lose internal snapshots is refused.
    env.ok(&["disk", "overlay", "lc"]);
    let chain = layers(&env, "lc");
    qemu_io(&chain[0], "write -P 0x5a 1M 64k");
    env.ok(&["snapshot", "create", "lc", "keep"]);
    let before = tree_digest(&env.data_dir());
    let err = env.fails(&["disk", "commit", "lc"]);
    assert!(err.contains("internal snapshot"), "{err}");
    let err = env.fails(&["disk", "overlay", "lc"]);
    assert!(err.contains("would hide them"), "{err}");
    assert_eq!(tree_digest(&env.data_dir()), before);
    env.ok(&["snapshot", "delete", "lc", "keep"]);
    let report = env.json(&["disk", "commit", "lc"]);
    assert_eq!(report[0]["live"], false, "{report}");
    assert_eq!(layers(&env, "lc"), vec![base.clone()]);
    assert!(pattern_at(&base, 1 << 20, 65536, 0x5a), "offline commit wrote the base");
    assert!(!pattern_at(&base, 1 << 20, 65536, 0x00));

    // The commit ran as a job that anyone can read afterwards.
    let jobs = env.json(&["job", "list", "--vm", "lc"]);
    let commits: Vec<_> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "commit")
        .collect();
    assert_eq!(commits.len(), 3, "{jobs}");
    assert!(commits.iter().all(|j| j["state"] == "succeeded"), "{jobs}");
}

/// Makes a stopped VM whose single disk holds `base` bytes of 0x11 data.
fn vm_with_data(env: &Env, name: &str, base: &str) -> PathBuf {
    env.create_guest(name, "");
    let disk = layers(env, name)[0].clone();
    qemu_io(&disk, &format!("write -P 0x11 0 {base}"));
    disk
}

#[test]
fn consolidate_merges_exactly_the_overlays_over_a_limit() {
    // Absolute limit only (the ratio limit is set out of reach).
    let env = Env::with_config("[disk]\nconsolidate_above = \"1M\"\nconsolidate_ratio = \"100000%\"\n");
    vm_with_data(&env, "big", "4M");
    vm_with_data(&env, "small", "4M");
    vm_with_data(&env, "flat", "4M");
    for vm in ["big", "small"] {
        env.ok(&["disk", "overlay", vm]);
    }
    qemu_io(&layers(&env, "big")[0], "write -P 0x22 0 2M");
    qemu_io(&layers(&env, "small")[0], "write -P 0x22 0 64k");

    let info = env.json(&["disk", "info", "big"]);
    assert!(
        info[0]["over_limit"].as_str().unwrap().contains("consolidate_above"),
        "{info}"
    );
    let info = env.json(&["disk", "info", "small"]);
    assert!(info[0]["over_limit"].is_null(), "{info}");
    let table = env.ok(&["disk", "info", "big"]);
    assert!(table.contains("over the consolidation policy"), "{table}");

    let items = env.json(&["disk", "consolidate", "--all"]);
    let action = |vm: &str| {
        items.as_array().unwrap().iter().find(|i| i["vm"] == vm).unwrap()["action"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(action("big"), "merged", "{items}");
    assert_eq!(action("small"), "within-limits", "{items}");
    assert_eq!(action("flat"), "within-limits", "{items}");
    assert_eq!(layers(&env, "big").len(), 1);
    assert_eq!(layers(&env, "small").len(), 2);
    assert_eq!(layers(&env, "flat").len(), 1);
    let big = layers(&env, "big")[0].clone();
    assert!(pattern_at(&big, 0, 2 << 20, 0x22) && pattern_at(&big, 2 << 20, 2 << 20, 0x11));

    // Ratio limit only: 2M on 4M is 50%, 64k is ~2%.
    let env = Env::with_config("[disk]\nconsolidate_above = \"1T\"\nconsolidate_ratio = \"25%\"\n");
    vm_with_data(&env, "big", "4M");
    vm_with_data(&env, "small", "4M");
    for vm in ["big", "small"] {
        env.ok(&["disk", "overlay", vm]);
    }
    qemu_io(&layers(&env, "big")[0], "write -P 0x22 0 2M");
    qemu_io(&layers(&env, "small")[0], "write -P 0x22 0 64k");
    let items = env.json(&["disk", "consolidate", "small"]);
    assert_eq!(items[0]["action"], "within-limits", "{items}");
    let items = env.json(&["disk", "consolidate", "big"]);
    assert_eq!(items[0]["action"], "merged", "{items}");
    assert!(
        items[0]["reason"].as_str().unwrap().contains("consolidate_ratio"),
        "{items}"
    );
    assert_eq!(layers(&env, "big").len(), 1);
    assert_eq!(layers(&env, "small").len(), 2);

    // Bad input: no VM and no --all; an unknown VM; a bad policy value in the config.
    let out = env.run(&["disk", "consolidate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = env.fails(&["disk", "consolidate", "nosuch"]);
    assert!(err.contains("no VM named nosuch"), "{err}");
    let bad = Env::with_config("[disk]\nconsolidate_ratio = \"lots\"\n");
    let err = bad.fails(&["disk", "consolidate", "--all"]);
    assert!(err.contains("not a percentage") && err.contains("line"), "{err}");
}
