//! Where corral keeps each VM's files. Names are validated ([`corral_types::VmName`]), so
//! joining them onto a directory can never escape it.

use std::path::{Path, PathBuf};

use corral_types::VmName;

use crate::config::HostConfig;

/// Files that belong to one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// `<data_dir>/vms/<name>`: disks corral created, saved state, logs.
    pub data: PathBuf,
    /// `<run_dir>/vms/<name>`: sockets and the pidfile, gone after a reboot.
    pub run: PathBuf,
}

impl VmPaths {
    pub fn new(cfg: &HostConfig, name: &VmName) -> VmPaths {
        VmPaths {
            data: cfg.data_dir.join("vms").join(name.as_str()),
            run: cfg.run_dir.join("vms").join(name.as_str()),
        }
    }
    /// Monitor for operations (start, stop, save…); used under the VM lock.
    pub fn qmp(&self) -> PathBuf {
        self.run.join("qmp.sock")
    }
    /// Second monitor for read-only status queries, so `list` never waits on an operation.
    pub fn qmp_status(&self) -> PathBuf {
        self.run.join("status.sock")
    }
    pub fn serial_sock(&self) -> PathBuf {
        self.run.join("serial.sock")
    }
    pub fn qga_sock(&self) -> PathBuf {
        self.run.join("qga.sock")
    }
    /// Live device changes (hot-plug, CD-ROM eject) of the running QEMU, one "pid what" a
    /// line; while it has any, the VM cannot be saved (see `engine/diskmgmt.rs`).
    pub fn layout_changes(&self) -> PathBuf {
        self.run.join("layout-changes")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.run.join("qemu.pid")
    }
    pub fn console_log(&self) -> PathBuf {
        self.data.join("console.log")
    }
    /// QEMU's own stderr (errors, warnings), kept for crash reports.
    pub fn qemu_log(&self) -> PathBuf {
        self.data.join("qemu.log")
    }
    pub fn saved_state(&self) -> PathBuf {
        self.data.join("state.sav")
    }
    /// What the saved state needs to be resumed: the spec it was saved with and whether it ran.
    pub fn saved_meta(&self) -> PathBuf {
        self.data.join("state.json")
    }
    pub fn disk(&self, disk_name: &str) -> PathBuf {
        self.data.join(format!("{disk_name}.qcow2"))
    }
}

pub fn lock_dir(cfg: &HostConfig) -> PathBuf {
    cfg.run_dir.join("locks")
}

pub fn db_path(cfg: &HostConfig) -> PathBuf {
    cfg.data_dir.join("corral.db")
}

/// Creates a directory (and parents) with the given mode on the final component.
pub fn ensure_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(path)
}
