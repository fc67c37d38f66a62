//! The QEMU command line, built by one pure function from the spec and the launch plan.
//!
//! Nothing here touches the system: the engine resolves the binary, the accelerator and the
//! paths first, so the same inputs always give the same argv (see the golden tests in
//! `tests/golden/`).

use std::path::Path;

use corral_types::{Accel, BootFrom, DiskBus, DisplayMode, Machine, NetworkMode, NicModel, VmSpec};
use serde_json::json;

use crate::paths::VmPaths;

/// The confinement every VM runs under. `spawn=deny` is why `save` passes QEMU a file
/// descriptor instead of an `exec:` URI.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Spare PCIe root ports (`hp0`, `hp1`, …) every q35 VM gets for devices hot-plugged while it
/// runs (`corral disk add`): q35's root bus `pcie.0` cannot hot-plug, only a root port can
/// take one device each. They come last on the command line, so the PCI addresses of all
/// other devices stay what they were without them. `pc` needs none: its `pci.0` hot-plugs.
pub const HOTPLUG_PORTS: usize = 4;

/// The device id of spare root port `i`.
pub fn hotplug_port(i: usize) -> String {
    format!("hp{i}")
}

/// Host-side facts the argv depends on, all resolved before the call.
#[derive(Debug, Clone)]
pub struct LaunchPlan<'a> {
    /// The emulator, as it will be executed.
    pub binary: &'a str,
    /// `Kvm` or `Tcg`; `Auto` has been resolved by the caller.
    pub accel: Accel,
    pub paths: &'a VmPaths,
    /// Resume from a saved state: QEMU waits for `migrate-incoming` and starts paused.
    pub incoming: bool,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// QEMU's option syntax escapes a comma by doubling it.
fn opt_escape(v: &str) -> String {
    v.replace(',', ",,")
}

/// Builds the full argv (argv[0] is the binary).
pub fn qemu_argv(spec: &VmSpec, plan: &LaunchPlan<'_>) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut push = |items: &[&str]| a.extend(items.iter().map(|x| x.to_string()));
    let p = plan.paths;
    let uuid = spec.uuid.map(|u| u.to_string()).unwrap_or_default();

    push(&[plan.binary]);
    push(&["-name", &format!("guest={},debug-threads=on", spec.name)]);
    if !uuid.is_empty() {
        push(&["-uuid", &uuid]);
    }
    let machine = match spec.machine {
        Machine::Q35 => "q35",
        Machine::Pc => "pc",
    };
    push(&["-machine", machine]);
    match plan.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        _ => push(&["-accel", "tcg"]),
    }
    push(&["-smp", &spec.cpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory.mib())]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-sandbox", SANDBOX]);
    push(&["-msg", "timestamp=on"]);
    push(&["-pidfile", &s(&p.pidfile())]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", opt_escape(&s(&p.qmp())))]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt_escape(&s(&p.qmp_status()))),
    ]);

    // Serial console: a socket to attach to, and a logfile so output never stalls.
    let mut serial = format!(
        "socket,id=serial0,path={},server=on,wait=off",
        opt_escape(&s(&p.serial_sock()))
    );
    if spec.serial_log {
        serial.push_str(&format!(",logfile={},logappend=on", opt_escape(&s(&p.console_log()))));
    }
    push(&["-chardev", &serial, "-serial", "chardev:serial0"]);

    if spec.guest_agent {
        push(&["-device", "virtio-serial-pci,id=vserial0"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=qga0,path={},server=on,wait=off",
                opt_escape(&s(&p.qga_sock()))
            ),
        ]);
        push(&[
            "-device",
            "virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        ]);
    }

    if spec.balloon {
        push(&["-device", "virtio-balloon-pci,id=balloon0"]);
    }

    // Boot order: bootindex on devices, except for cdrom-once, which needs the legacy
    // `-boot once=d` (it only applies when no device carries a bootindex).
    let boot = spec.boot_from();
    let use_bootindex = !matches!(boot, BootFrom::CdromOnce | BootFrom::Kernel);
    let mut next_index = 1;
    let mut cd_index = None;
    if matches!(boot, BootFrom::Cdrom) {
        cd_index = Some(next_index);
        next_index += 1;
    }

    // IDE/AHCI slots: q35 has a 6-port AHCI controller (ide.0-ide.5, one unit each); pc has
    // two IDE buses with two units each.
    let mut ide_slot = 0usize;
    let ide_addr = |slot: usize| match spec.machine {
        Machine::Q35 => format!("bus=ide.{slot}"),
        Machine::Pc => format!("bus=ide.{},unit={}", slot / 2, slot % 2),
    };
    let mut scsi_added = false;
    for (i, d) in spec.disks.iter().enumerate() {
        let node = if d.name.is_empty() {
            format!("disk{i}")
        } else {
            d.name.clone()
        };
        let path = d.path.clone().unwrap_or_else(|| p.disk(&node));
        let blockdev = json!({
            "driver": d.format.as_str(),
            "node-name": format!("drive-{node}"),
            "discard": "unmap",
            "file": {"driver": "file", "filename": s(&path), "aio": "threads"},
        });
        push(&["-blockdev", &blockdev.to_string()]);
        let mut dev = match d.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive=drive-{node},id={node}"),
            DiskBus::Scsi => {
                if !scsi_added {
                    push(&["-device", "virtio-scsi-pci,id=scsi0"]);
                    scsi_added = true;
                }
                format!("scsi-hd,bus=scsi0.0,drive=drive-{node},id={node}")
            }
            DiskBus::Sata | DiskBus::Ide => {
                let addr = ide_addr(ide_slot);
                ide_slot += 1;
                format!("ide-hd,{addr},drive=drive-{node},id={node}")
            }
        };
        if use_bootindex {
            dev.push_str(&format!(",bootindex={next_index}"));
            next_index += 1;
        }
        push(&["-device", &dev]);
    }
    if let Some(iso) = &spec.cdrom {
        let blockdev = json!({
            "driver": "raw",
            "node-name": "drive-cd0",
            "read-only": true,
            "file": {"driver": "file", "filename": s(iso), "read-only": true},
        });
        push(&["-blockdev", &blockdev.to_string()]);
        let mut dev = format!("ide-cd,{},drive=drive-cd0,id=cd0", ide_addr(ide_slot));
        if use_bootindex {
            let idx = cd_index.unwrap_or(next_index);
            dev.push_str(&format!(",bootindex={idx}"));
        }
        push(&["-device", &dev]);
    }
    match boot {
        BootFrom::Kernel => {
            if let Some(k) = &spec.boot.kernel {
                push(&["-kernel", &s(k)]);
            }
            if let Some(i) = &spec.boot.initrd {
                push(&["-initrd", &s(i)]);
            }
            if let Some(c) = &spec.boot.cmdline {
                push(&["-append", c]);
            }
        }
        BootFrom::CdromOnce => push(&["-boot", "order=c,once=d"]),
        _ => {}
    }

    match spec.network.mode {
        NetworkMode::User => {
            let mut netdev = "user,id=net0".to_string();
            for fw in &spec.network.forwards {
                netdev.push_str(&format!(
                    ",hostfwd={}:{}:{}-:{}",
                    fw.proto, fw.host_addr, fw.host, fw.guest
                ));
            }
            push(&["-netdev", &netdev]);
            let model = match spec.network.model {
                NicModel::Virtio => "virtio-net-pci",
                NicModel::E1000 => "e1000",
                NicModel::Rtl8139 => "rtl8139",
            };
            let mac = spec.network.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
            push(&["-device", &format!("{model},netdev=net0,id=nic0{mac}")]);
        }
        NetworkMode::None => {}
    }

    match spec.display.mode {
        DisplayMode::Vnc => {
            let vnc = match spec.display.vnc_port {
                Some(port) => format!("127.0.0.1:{}", port - 5900),
                // QEMU picks the first free display from 0 to 99.
                None => "127.0.0.1:0,to=99".to_string(),
            };
            push(&["-vnc", &vnc]);
            push(&["-device", "VGA,id=video0"]);
        }
        DisplayMode::None => {}
    }

    if spec.machine == Machine::Q35 {
        for i in 0..HOTPLUG_PORTS {
            // Each root port needs its own chassis number (chassis/slot pairs are unique).
            push(&[
                "-device",
                &format!("pcie-root-port,id={},chassis={}", hotplug_port(i), i + 1),
            ]);
        }
    }

    if plan.incoming {
        push(&["-incoming", "defer", "-S"]);
    }
    a
}

/// Renders an argv as a shell-quoted line (for logs and `corral vm show --argv`).
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@+".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
