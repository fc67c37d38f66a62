//! Bad input gets a clear message, a non-zero exit, and no change on disk.

mod common;

use std::net::TcpListener;

use common::{guest, tree_digest, Env};

fn unchanged<F: FnOnce() -> String>(env: &Env, f: F) -> String {
    let list_before = env.ok(&["vm", "list", "--json"]);
    let before = tree_digest(env.dir.path());
    let err = f();
    assert_eq!(
        tree_digest(env.dir.path()),
        before,
        "a failed command changed files on disk"
    );
    assert_eq!(env.ok(&["vm", "list", "--json"]), list_before);
    err
}

#[test]
fn bad_names_specs_and_sizes() {
    let env = Env::new();
    env.ok(&["vm", "create", "keep", "--disk", "16M", "--display", "none"]);
    let err = unchanged(&env, || env.fails(&["vm", "create", "../etc", "--disk", "1G"]));
    assert!(err.contains("invalid VM name") && err.contains("'/'"), "{err}");
    let err = unchanged(&env, || env.fails(&["vm", "create", "-x", "--disk", "1G"]));
    assert!(!err.is_empty());
    let err = unchanged(&env, || env.fails(&["vm", "create", ".hidden", "--disk", "1G"]));
    assert!(err.contains("starts with '.'"), "{err}");
    let err = unchanged(&env, || env.fails(&["vm", "create", "x", "--disk", "12Q"]));
    assert!(err.contains("not a size"), "{err}");
    let err = unchanged(&env, || {
        env.fails(&["vm", "create", "x", "--memory", "lots", "--disk", "1G"])
    });
    assert!(err.contains("not a size"), "{err}");
    let err = unchanged(&env, || env.fails(&["vm", "create", "keep", "--disk", "1G"]));
    assert!(err.contains("already exists"), "{err}");

    let spec = env.dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        "name = \"x\"\ncpus = 2\nmemroy = \"1G\"\n[[disks]]\nsize = \"1G\"\n",
    )
    .unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "define", spec.to_str().unwrap()]));
    assert!(
        err.contains("line 3") && err.contains("unknown field `memroy`"),
        "{err}"
    );
    std::fs::write(
        &spec,
        "name = \"x\"\n[[disks]]\nsize = \"1G\"\n[[disks]]\nbus = \"virtio\"\n",
    )
    .unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "define", spec.to_str().unwrap()]));
    assert!(
        err.contains("line 4") && err.contains("disks[1]") && err.contains("`path`"),
        "{err}"
    );
    std::fs::write(&spec, "name = \"x\"\n[[disks]]\nsize = \"1.5Z\"\n").unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "define", spec.to_str().unwrap()]));
    assert!(err.contains("line 3") && err.contains("not a size"), "{err}");
    // A bad name inside a spec file is caught as well.
    std::fs::write(&spec, "name = \"a/b\"\n[[disks]]\nsize = \"1G\"\n").unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "define", spec.to_str().unwrap()]));
    assert!(err.contains("line 1") && err.contains("'/'"), "{err}");
}

#[test]
fn missing_kernel_or_disk() {
    let env = Env::new();
    let err = unchanged(&env, || {
        env.fails(&[
            "vm",
            "create",
            "x",
            "--kernel",
            "/nonexistent/vmlinuz",
            "--display",
            "none",
        ])
    });
    assert!(err.contains("kernel /nonexistent/vmlinuz does not exist"), "{err}");
    let spec = env.dir.path().join("d.toml");
    std::fs::write(&spec, "name = \"x\"\n[[disks]]\npath = \"/nonexistent/disk.qcow2\"\n").unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "define", spec.to_str().unwrap()]));
    assert!(err.contains("/nonexistent/disk.qcow2 does not exist"), "{err}");

    // A disk that disappears after define is caught at start, and nothing is started.
    let img = env.dir.path().join("ext.qcow2");
    std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"])
        .status()
        .unwrap();
    std::fs::write(
        &spec,
        format!(
            "name = \"ext\"\n[display]\nmode = \"none\"\n[[disks]]\npath = \"{}\"\n",
            img.display()
        ),
    )
    .unwrap();
    env.ok(&["vm", "define", spec.to_str().unwrap()]);
    std::fs::remove_file(&img).unwrap();
    let err = unchanged(&env, || env.fails(&["vm", "start", "ext"]));
    assert!(err.contains("ext.qcow2 does not exist"), "{err}");
    assert_eq!(env.state("ext"), "stopped");
}

#[test]
fn qemu_not_installed() {
    let env = Env::with_config("[qemu]\naccel = \"tcg\"\nbinary = \"qemu-system-nowhere\"\n");
    env.ok(&["vm", "create", "q", "--disk", "16M", "--display", "none"]);
    let err = unchanged(&env, || env.fails(&["vm", "start", "q"]));
    assert!(
        err.contains("QEMU is not installed") && err.contains("qemu-system-nowhere") && err.contains("apt-get install"),
        "{err}"
    );
    assert_eq!(env.state("q"), "stopped");
}

#[test]
fn bad_config_file_is_refused_with_its_line() {
    let env = Env::with_config("[qemu]\naccel = \"tcg\"\nbinray = \"x\"\n");
    let err = env.fails(&["vm", "list"]);
    assert!(
        err.contains("config file") && err.contains("line 5") && err.contains("binray"),
        "{err}"
    );
}

#[test]
fn vnc_port_in_use() {
    let env = Env::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut port = taken.local_addr().unwrap().port();
    // VNC ports start at 5900; find one we can hold.
    let holder = if port >= 5900 {
        taken
    } else {
        let l = (5950..6100)
            .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .unwrap();
        port = l.local_addr().unwrap().port();
        l
    };
    let spec = env.dir.path().join("v.toml");
    std::fs::write(
        &spec,
        format!("name = \"v\"\n[[disks]]\nsize = \"16M\"\n[display]\nmode = \"vnc\"\nvnc_port = {port}\n"),
    )
    .unwrap();
    env.ok(&["vm", "define", spec.to_str().unwrap()]);
    let err = unchanged(&env, || env.fails(&["vm", "start", "v"]));
    assert!(
        err.contains(&format!("VNC port {port}")) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(env.state("v"), "stopped");
    drop(holder);
}

/// Starting a running VM, stopping a stopped one, deleting a running one.
#[test]
fn wrong_state_operations() {
    let env = Env::new();
    env.create_guest("w", "");
    let err = unchanged(&env, || env.fails(&["vm", "stop", "w"]));
    assert!(
        err.contains("VM w is stopped") && err.contains("nothing to stop"),
        "{err}"
    );
    let err = unchanged(&env, || env.fails(&["vm", "save", "w"]));
    assert!(err.contains("only a running or paused VM can be saved"), "{err}");
    let err = unchanged(&env, || env.fails(&["vm", "start", "nosuch"]));
    assert!(err.contains("no VM named nosuch"), "{err}");

    env.ok(&["vm", "start", "w"]);
    let err = env.fails(&["vm", "start", "w"]);
    assert!(
        err.contains("VM w is running") && err.contains("already running"),
        "{err}"
    );
    let err = env.fails(&["vm", "delete", "w"]);
    assert!(
        err.contains("VM w is running") && err.contains("stop it first"),
        "{err}"
    );
    assert!(env.vm_data("w").join("disk0.qcow2").exists());
    assert_eq!(env.state("w"), "running");
    let _ = guest();
    env.ok(&["vm", "kill", "w"]);
}

/// `vm edit` applies a valid change and refuses an invalid one without changing anything.
#[test]
fn edit_applies_valid_and_refuses_invalid() {
    let env = Env::new();
    env.ok(&["vm", "create", "e", "--disk", "16M", "--display", "none"]);
    let out = env
        .cmd()
        .args(["vm", "edit", "e"])
        .env("EDITOR", "sed -i 's/^cpus = 1$/cpus = 3/'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.json(&["vm", "list"])[0]["cpus"], 3);
    let before = tree_digest(env.dir.path());
    let out = env
        .cmd()
        .args(["vm", "edit", "e"])
        .env("EDITOR", "sed -i 's/^cpus = 3$/cpuz = 4/'")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `cpuz`") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(tree_digest(env.dir.path()), before);
    assert_eq!(env.json(&["vm", "list"])[0]["cpus"], 3);
    // A relative path would mean different files to corral and to QEMU: refused.
    let out = env
        .cmd()
        .args(["vm", "edit", "e"])
        .env("EDITOR", "sed -i '1a cdrom = \"rel.iso\"'")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("paths must be absolute") && err.contains("rel.iso"),
        "{err}"
    );
    assert_eq!(tree_digest(env.dir.path()), before);
}
