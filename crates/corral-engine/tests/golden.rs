//! Golden tests for the QEMU argument builder: each `tests/golden/NAME.toml` spec must give
//! exactly the argv in `tests/golden/NAME.args` (one argument per line).
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p corral-engine --test golden`,
//! then review the diff.

use std::path::{Path, PathBuf};

use corral_engine::qemu_args::{qemu_argv, LaunchPlan};
use corral_engine::VmPaths;
use corral_types::{Accel, VmSpec};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render(name: &str) -> String {
    let spec = VmSpec::from_toml(&std::fs::read_to_string(golden_dir().join(format!("{name}.toml"))).unwrap()).unwrap();
    let paths = VmPaths {
        data: PathBuf::from(format!("/var/lib/corral/vms/{name}")),
        run: PathBuf::from(format!("/run/corral/vms/{name}")),
    };
    let accel = if spec.accel == Accel::Auto {
        Accel::Tcg
    } else {
        spec.accel
    };
    let plan = LaunchPlan {
        binary: "/usr/bin/qemu-system-x86_64",
        accel,
        paths: &paths,
        incoming: name.starts_with("resume"),
    };
    let mut out = qemu_argv(&spec, &plan).join("\n");
    out.push('\n');
    out
}

fn check(name: &str) {
    let got = render(name);
    let file = golden_dir().join(format!("{name}.args"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", file.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .map(|(i, (w, g))| format!("line {}:\n  want {w}\n  got  {g}", i + 1))
            .collect();
        panic!(
            "argv for {name} differs from {}:\n{}\n(want {} lines, got {})",
            file.display(),
            diff.join("\n"),
            want.lines().count(),
            got.lines().count()
        );
    }
}

#[test]
fn kernel_tcg() {
    check("kernel-tcg");
}

#[test]
fn disks_kvm_vnc() {
    check("disks-kvm-vnc");
}

#[test]
fn cdrom_once() {
    check("cdrom-once");
}

#[test]
fn resume_pc() {
    check("resume-pc");
}

#[test]
fn every_vm_is_sandboxed_and_detachable() {
    for name in ["kernel-tcg", "disks-kvm-vnc", "cdrom-once", "resume-pc"] {
        let argv = render(name);
        assert!(
            argv.contains("-sandbox\non,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\n"),
            "{name}"
        );
        assert!(
            !argv.contains("-daemonize"),
            "{name}: -daemonize cannot work under spawn=deny"
        );
        assert!(argv.contains("-pidfile\n"), "{name}");
    }
}

/// q35 cannot hot-plug on its root bus, so every q35 VM gets spare root ports for
/// `corral disk add` on a running VM; they come last so that no other device's PCI address
/// moves. `pc` hot-plugs on `pci.0` and gets none.
#[test]
fn q35_gets_spare_hotplug_ports_last() {
    use corral_engine::qemu_args::{hotplug_port, HOTPLUG_PORTS};
    for name in ["kernel-tcg", "disks-kvm-vnc", "cdrom-once"] {
        let argv: Vec<String> = render(name).lines().map(str::to_string).collect();
        let ports: Vec<usize> = (0..argv.len())
            .filter(|&i| argv[i].starts_with("pcie-root-port,"))
            .collect();
        assert_eq!(ports.len(), HOTPLUG_PORTS, "{name}");
        for (n, &i) in ports.iter().enumerate() {
            assert_eq!(argv[i - 1], "-device", "{name}");
            assert!(
                argv[i].contains(&format!("id={},", hotplug_port(n))),
                "{name}: {}",
                argv[i]
            );
        }
        let last_other_device = (0..argv.len())
            .filter(|&i| argv[i] == "-device" && !argv[i + 1].starts_with("pcie-root-port,"))
            .max()
            .unwrap();
        assert!(
            last_other_device < ports[0],
            "{name}: spare ports must come after every other device"
        );
    }
    assert!(!render("resume-pc").contains("pcie-root-port"));
}
