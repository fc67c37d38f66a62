//! Disk management: add, grow and remove a VM's disks, and change its CD-ROM.
//!
//! Like the other operations, the VM's state picks the path. Running or paused: the change
//! is made live through QMP (hot-plug with `blockdev-add` + `device_add`, `block_resize`,
//! `device_del` + `blockdev-del`, `blockdev-change-medium`/`eject`) and the spec is updated
//! too, so the next cold start sees the same disks. Stopped (or crashed): `qemu-img` and the
//! spec. Saved: refused, since the saved memory belongs to the devices as they are.
//!
//! Every input is checked before anything changes: names, sizes, files, bus, state. A
//! hot-plug that fails half way is undone (device, block node, new image file).
//!
//! Hot-plug needs a bus that takes it: on q35 that is a free spare root port
//! ([`crate::qemu_args::HOTPLUG_PORTS`]), on pc the root bus. Disks attached at start on
//! q35's root bus `pcie.0` cannot be unplugged live; corral says so and asks to stop the VM.
//! SATA/IDE cannot hot-plug at all.
//!
//! A live change to the device set also makes the VM unsaveable until its next cold start
//! (see [`layout_changes`]): QEMU can only restore a saved state into exactly the devices
//! it was saved from, and the next start builds them from the changed spec.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_qmp::Qmp;
use corral_types::{BootFrom, ByteSize, DiskBus, DiskFormat, DiskRole, DiskSpec, Machine, RunState, VmName, VmSpec};
use serde::Serialize;
use serde_json::json;

use super::define::create_qcow2;
use super::hotplug::{find_block, pci_view, unplug, UnplugError};
use super::layers::disk_path;
use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::paths::{ensure_dir, VmPaths};
use crate::qemu_args::{hotplug_port, HOTPLUG_PORTS};

/// How long the guest gets by default to release a disk after `device_del`.
pub const UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// Device ids corral itself gives QEMU devices; a disk (whose device id is its name) must
/// not take one of them.
const RESERVED_IDS: &[&str] = &["cd0", "nic0", "video0", "vserial0", "scsi0", "serial0", "qga0"];

/// What `corral disk add` takes.
#[derive(Debug, Clone)]
pub struct DiskAddOptions {
    /// Generated (`disk0`, `disk1`, …) when absent.
    pub name: Option<String>,
    pub size: ByteSize,
    /// Default for an added disk: `data`.
    pub role: Option<DiskRole>,
    pub bus: Option<DiskBus>,
}

/// Result of `disk add` and `disk resize`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub vm: String,
    pub disk: String,
    pub path: PathBuf,
    /// Virtual size in bytes, now.
    pub size: u64,
    /// For a resize: the size before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_size: Option<u64>,
    pub role: DiskRole,
    pub bus: DiskBus,
    /// Whether the running guest got the change at once (false: applied to the image and spec).
    pub live: bool,
}

/// Result of `disk remove`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskRemoval {
    pub vm: String,
    pub disk: String,
    /// Whether the disk was unplugged from the running guest.
    pub live: bool,
    pub path: PathBuf,
    /// The image file was deleted.
    pub file_removed: bool,
    /// Why the image file was kept, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

/// Result of `vm cdrom`.
#[derive(Debug, Clone, Serialize)]
pub struct CdromReport {
    pub vm: String,
    /// The ISO now in the drive (`None`: empty / ejected).
    pub cdrom: Option<PathBuf>,
    pub previous: Option<PathBuf>,
    /// Whether the running guest's drive changed at once.
    pub live: bool,
}

pub(super) fn find_disk<'a>(spec: &'a VmSpec, disk: &str) -> Result<(usize, &'a DiskSpec), EngineError> {
    spec.disks
        .iter()
        .enumerate()
        .find(|(_, d)| d.name == disk)
        .ok_or_else(|| EngineError::NoSuchDisk {
            vm: spec.name.to_string(),
            disk: disk.to_string(),
            known: if spec.disks.is_empty() {
                "none".into()
            } else {
                spec.disks
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Checks a new disk's name: the VM name rule, the spec's disk-name rule, and a valid QEMU
/// device id that corral does not use itself.
fn check_new_name(spec: &VmSpec, name: &str) -> Result<(), EngineError> {
    let bad = |why: String| EngineError::BadRequest(format!("bad disk name {name:?}: {why}"));
    VmName::new(name).map_err(|e| bad(e.to_string()))?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad("start it with a letter (it becomes the QEMU device id)".into()));
    }
    if RESERVED_IDS.contains(&name) || (0..HOTPLUG_PORTS).any(|i| hotplug_port(i) == name) {
        return Err(bad("corral uses that id for another device; pick another name".into()));
    }
    if spec.disks.iter().any(|d| d.name == name) {
        return Err(EngineError::BadRequest(format!(
            "VM {} already has a disk named {name:?}; pick another name with --name",
            spec.name
        )));
    }
    Ok(())
}

fn check_size(size: ByteSize) -> Result<(), EngineError> {
    if size.0 < 1 << 20 {
        return Err(EngineError::BadRequest(format!(
            "disk size {size} is too small; give at least 1M"
        )));
    }
    if !size.0.is_multiple_of(512) {
        return Err(EngineError::BadRequest(format!(
            "disk size {size} is not a multiple of 512 bytes; give e.g. 10G"
        )));
    }
    Ok(())
}

fn saved_refusal(spec: &VmSpec, what: &str) -> EngineError {
    EngineError::WrongState {
        name: spec.name.to_string(),
        state: RunState::Saved,
        hint: format!(
            "its saved memory belongs to the devices as they are; start it (`corral vm start {}`) first, then {what}",
            spec.name
        ),
    }
}

/// Records that the running QEMU (`pid`) no longer has the devices its start built.
fn note_layout_change(paths: &VmPaths, pid: Option<u32>, what: &str) {
    use std::io::Write;
    let Some(pid) = pid else { return };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.layout_changes());
    if let Ok(mut f) = f {
        let _ = writeln!(f, "{pid} {what}");
    }
}

/// Live device changes of the running QEMU `pid` (empty: its devices are the ones its start
/// built). Lines of an earlier QEMU of the same VM are ignored, so a stale file never counts.
pub(crate) fn layout_changes(paths: &VmPaths, pid: Option<u32>) -> Vec<String> {
    let (Some(pid), Ok(text)) = (pid, std::fs::read_to_string(paths.layout_changes())) else {
        return vec![];
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| p.parse() == Ok(pid))
        .map(|(_, w)| w.to_string())
        .collect()
}

/// Whether `path` is a file inside `dir` (both resolved, so `..` and symlinks cannot lead
/// outside).
fn inside(path: &Path, dir: &Path) -> bool {
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

impl Engine {
    /// The spec and its generation, read again once the lock is held (another operation
    /// may have changed it between the first read and the lock).
    fn reread(&self, name: &str) -> Result<(VmSpec, i64), EngineError> {
        let rec = self.get(name)?;
        Ok((rec.spec, rec.generation))
    }

    /// Adds a new qcow2 disk: to the spec, and to the running guest at once.
    pub async fn disk_add(&self, name: &str, o: DiskAddOptions) -> Result<DiskReport, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "disk add")?;
        let (spec, generation) = self.reread(name)?;
        let paths = self.paths(&spec.name);
        let disk_name = match &o.name {
            Some(n) => n.clone(),
            None => (0..)
                .map(|n| format!("disk{n}"))
                .find(|n| !spec.disks.iter().any(|d| &d.name == n) && !paths.disk(n).exists())
                .expect("an unused name"),
        };
        check_new_name(&spec, &disk_name)?;
        check_size(o.size)?;
        let path = paths.disk(&disk_name);
        if path.exists() {
            return Err(EngineError::BadRequest(format!(
                "{} already exists (left by an earlier `disk remove --keep-file`?); move it away or pick another name",
                path.display()
            )));
        }
        let disk = DiskSpec {
            name: disk_name.clone(),
            path: Some(path.clone()),
            size: Some(o.size),
            format: DiskFormat::Qcow2,
            role: o.role.unwrap_or(DiskRole::Data),
            bus: o.bus.unwrap_or_default(),
        };
        let mut new_spec = spec.clone();
        new_spec.disks.push(disk.clone());
        new_spec.validate()?;
        let ata = matches!(disk.bus, DiskBus::Sata | DiskBus::Ide);
        if ata {
            let slots = if spec.machine == Machine::Q35 { 6 } else { 4 };
            let used = new_spec
                .disks
                .iter()
                .filter(|d| matches!(d.bus, DiskBus::Sata | DiskBus::Ide))
                .count()
                + usize::from(new_spec.cdrom.is_some());
            if used > slots {
                return Err(EngineError::BadRequest(format!(
                    "the {} machine has {slots} SATA/IDE slots and they are all taken; use --bus virtio or scsi",
                    spec.machine
                )));
            }
        }
        let o_state = observe(&spec, &paths).await;
        let live = match o_state.state {
            RunState::Saved => return Err(saved_refusal(&spec, "add disks")),
            RunState::Running | RunState::Paused if ata => {
                return Err(EngineError::WrongState {
                    name: spec.name.to_string(),
                    state: o_state.state,
                    hint: format!(
                        "SATA/IDE disks cannot be hot-plugged; stop the VM first (`corral vm stop {}`), or use --bus virtio or scsi",
                        spec.name
                    ),
                });
            }
            s => s.is_active(),
        };

        ensure_dir(&paths.data, 0o700).map_err(EngineError::io(&paths.data))?;
        create_qcow2(&self.cfg.qemu.img_binary, &path, o.size)?;
        let result = async {
            if live {
                let qmp = self.monitor(&spec, &paths).await?;
                self.hotplug(&qmp, &spec, &disk, &path).await?;
                let stored = self.reg().update(&new_spec, generation);
                if let Err(e) = stored {
                    let _ = unplug(&qmp, spec.name.as_str(), &disk_name, UNPLUG_TIMEOUT).await;
                    let _ = qmp
                        .execute("blockdev-del", Some(json!({"node-name": format!("drive-{disk_name}")})))
                        .await;
                    return Err(e);
                }
                note_layout_change(&paths, o_state.pid, &format!("added disk {disk_name}"));
                Ok(())
            } else {
                self.reg().update(&new_spec, generation).map(|_| ())
            }
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tracing::info!(vm = %spec.name, disk = %disk_name, live, "disk added");
        Ok(DiskReport {
            vm: spec.name.to_string(),
            disk: disk_name,
            path,
            size: o.size.0,
            previous_size: None,
            role: disk.role,
            bus: disk.bus,
            live,
        })
    }

    /// blockdev-add + device_add of a new disk into the running QEMU; undone on failure.
    async fn hotplug(&self, qmp: &Qmp, spec: &VmSpec, disk: &DiskSpec, path: &Path) -> Result<(), EngineError> {
        let vm = spec.name.as_str();
        let node = format!("drive-{}", disk.name);
        let view = pci_view(qmp, vm).await?;
        if view.ids.iter().any(|i| i == &disk.name) {
            return Err(EngineError::BadRequest(format!(
                "the running VM {vm} already has a device with id {:?}; pick another name with --name",
                disk.name
            )));
        }
        let q35 = spec.machine == Machine::Q35;
        let mut ports = view.free_ports.into_iter();
        let mut take_port = |what: &str| -> Result<Option<String>, EngineError> {
            if !q35 {
                return Ok(None); // pc: the root bus hot-plugs
            }
            ports.next().map(Some).ok_or_else(|| EngineError::WrongState {
                name: vm.to_string(),
                state: RunState::Running,
                hint: format!(
                    "all {HOTPLUG_PORTS} hot-plug slots are taken, so {what} cannot be plugged in now; stop the VM and add it then (`corral vm stop {vm}`); after a restart the slots are free again"
                ),
            })
        };
        let mut device = match disk.bus {
            DiskBus::Virtio => {
                let mut d = json!({"driver": "virtio-blk-pci", "drive": node, "id": disk.name});
                if let Some(port) = take_port("the disk")? {
                    d["bus"] = port.into();
                }
                d
            }
            DiskBus::Scsi => json!({"driver": "scsi-hd", "bus": "scsi0.0", "drive": node, "id": disk.name}),
            DiskBus::Sata | DiskBus::Ide => unreachable!("refused before"),
        };
        let mut added_controller = false;
        if disk.bus == DiskBus::Scsi && !view.ids.iter().any(|i| i == "scsi0") {
            let mut ctl = json!({"driver": "virtio-scsi-pci", "id": "scsi0"});
            if let Some(port) = take_port("a SCSI controller")? {
                ctl["bus"] = port.into();
            }
            qmp.execute("device_add", Some(ctl))
                .await
                .map_err(EngineError::qmp(vm))?;
            added_controller = true;
        }
        let blockdev = json!({
            "driver": disk.format.as_str(),
            "node-name": node,
            "discard": "unmap",
            "file": {"driver": "file", "filename": path.display().to_string(), "aio": "threads"},
        });
        if let Err(e) = qmp.execute("blockdev-add", Some(blockdev)).await {
            if added_controller {
                let _ = unplug(qmp, vm, "scsi0", UNPLUG_TIMEOUT).await;
            }
            return Err(EngineError::qmp(vm)(e));
        }
        if let Err(e) = qmp.execute("device_add", Some(device.take())).await {
            let _ = qmp.execute("blockdev-del", Some(json!({"node-name": node}))).await;
            if added_controller {
                let _ = unplug(qmp, vm, "scsi0", UNPLUG_TIMEOUT).await;
            }
            return Err(EngineError::qmp(vm)(e));
        }
        Ok(())
    }

    /// Grows a disk to `size`. Shrinking is refused: it would cut off the guest's data.
    pub async fn disk_resize(&self, name: &str, disk: &str, size: ByteSize) -> Result<DiskReport, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "disk resize")?;
        let (spec, generation) = self.reread(name)?;
        let paths = self.paths(&spec.name);
        let (i, d) = find_disk(&spec, disk)?;
        check_size(size)?;
        let path = disk_path(d, &paths);
        let o = observe(&spec, &paths).await;
        let vm = spec.name.as_str();
        let (current, live_node, qmp) = match o.state {
            RunState::Saved => return Err(saved_refusal(&spec, "resize its disks")),
            RunState::Running | RunState::Paused => {
                let qmp = self.monitor(&spec, &paths).await?;
                match find_block(&qmp, vm, disk).await? {
                    Some(Some(ins)) => (ins.image.virtual_size, Some(ins.node_name), Some(qmp)),
                    _ => {
                        return Err(EngineError::WrongState {
                            name: vm.to_string(),
                            state: o.state,
                            hint: format!(
                                "disk {disk} is in its spec but not attached to the running guest (added by `corral vm edit` after the start?); stop the VM first (`corral vm stop {vm}`)"
                            ),
                        })
                    }
                }
            }
            RunState::Stopped | RunState::Crashed => (self.img_info(&path)?.virtual_size, None, None),
        };
        if size.0 < current {
            return Err(EngineError::BadRequest(format!(
                "disk {disk} of VM {vm} is {} ({current} bytes); shrinking to {size} is refused because it would cut off the guest's data. Shrink the file system in the guest and copy it to a smaller disk instead",
                ByteSize(current).approx()
            )));
        }
        if size.0 > current {
            match (&qmp, &live_node) {
                (Some(qmp), Some(node)) => {
                    qmp.execute("block_resize", Some(json!({"node-name": node, "size": size.0})))
                        .await
                        .map_err(EngineError::qmp(vm))?;
                }
                _ => {
                    let p = path.display().to_string();
                    self.qemu_img(
                        &["resize", "-q", "-f", d.format.as_str(), &p, &size.0.to_string()],
                        &format!("qemu-img resize {p}"),
                    )?;
                }
            }
        }
        let mut new_spec = spec.clone();
        new_spec.disks[i].size = Some(size);
        if new_spec != spec {
            self.reg().update(&new_spec, generation)?;
        }
        Ok(DiskReport {
            vm: vm.to_string(),
            disk: disk.to_string(),
            path,
            size: size.0,
            previous_size: Some(current),
            role: d.role,
            bus: d.bus,
            live: qmp.is_some(),
        })
    }

    /// Removes a disk from the spec (and, live, from the guest). The image file is deleted
    /// only when it lives in the VM's own directory and `keep_file` is false.
    pub async fn disk_remove(
        &self,
        name: &str,
        disk: &str,
        keep_file: bool,
        timeout: Option<Duration>,
    ) -> Result<DiskRemoval, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "disk remove")?;
        let (spec, generation) = self.reread(name)?;
        let paths = self.paths(&spec.name);
        let vm = spec.name.as_str();
        let (i, d) = find_disk(&spec, disk)?;
        let d = d.clone();
        let mut new_spec = spec.clone();
        new_spec.disks.remove(i);
        let boots_from_disk = matches!(spec.boot_from(), BootFrom::Disk | BootFrom::CdromOnce);
        if boots_from_disk && d.role == DiskRole::System && !new_spec.disks.iter().any(|x| x.role == DiskRole::System) {
            return Err(EngineError::BadRequest(format!(
                "disk {disk} is the only system disk of VM {vm}, which boots from disk; removing it would leave the VM unbootable. Delete the VM instead (`corral vm delete {vm}`), or give it another system disk first"
            )));
        }
        new_spec.validate()?;
        let path = disk_path(&d, &paths);
        let o = observe(&spec, &paths).await;
        let mut live = false;
        match o.state {
            RunState::Saved => return Err(saved_refusal(&spec, "remove disks")),
            RunState::Running | RunState::Paused => {
                let qmp = self.monitor(&spec, &paths).await?;
                // The top node, whatever it is now (an overlay may sit on the disk's image).
                // A device already gone (an earlier attempt timed out and the guest let go
                // later) may still have left its node behind.
                let node = match find_block(&qmp, vm, disk).await? {
                    Some(inserted) => {
                        let timeout = timeout.unwrap_or(UNPLUG_TIMEOUT);
                        unplug(&qmp, vm, disk, timeout).await.map_err(|e| match e {
                            UnplugError::RootBus => EngineError::WrongState {
                                name: vm.to_string(),
                                state: o.state,
                                hint: format!(
                                    "disk {disk} was attached at start on the q35 root bus, which cannot unplug devices; stop the VM first (`corral vm stop {vm}`), then remove it"
                                ),
                            },
                            UnplugError::Timeout => EngineError::Timeout {
                                seconds: timeout.as_secs(),
                                what: format!(
                                    "the guest of VM {vm} to release disk {disk}{}. QEMU asked it to and it may still do so; the disk stays in the spec: run the command again to finish, or stop the VM and remove the disk then",
                                    if o.state == RunState::Paused { " (the VM is paused, so the guest cannot answer; `corral vm resume` it)" } else { "" }
                                ),
                            },
                            UnplugError::Qmp(e) => EngineError::qmp(vm)(e),
                        })?;
                        live = true;
                        inserted.map(|i| i.node_name)
                    }
                    None => None,
                };
                let node = node.unwrap_or_else(|| format!("drive-{disk}"));
                match qmp.execute("blockdev-del", Some(json!({"node-name": node}))).await {
                    Ok(_) => live = true,
                    Err(e) if live => tracing::warn!(vm, disk, "blockdev-del {node} failed: {e}"),
                    Err(_) => {} // never attached to this QEMU
                }
                if live {
                    note_layout_change(&paths, o.pid, &format!("removed disk {disk}"));
                }
            }
            RunState::Stopped | RunState::Crashed => {}
        }
        self.reg().update(&new_spec, generation)?;
        let mut report = DiskRemoval {
            vm: vm.to_string(),
            disk: disk.to_string(),
            live,
            path: path.clone(),
            file_removed: false,
            kept_because: None,
        };
        if keep_file {
            report.kept_because = Some("--keep-file was given".into());
        } else if !inside(&path, &paths.data) {
            report.kept_because = Some(format!(
                "it is outside the VM's directory {}; corral deletes only images it keeps itself",
                paths.data.display()
            ));
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => report.file_removed = true,
                Err(e) => report.kept_because = Some(format!("deleting it failed: {e}")),
            }
        }
        tracing::info!(vm, disk, live, removed = report.file_removed, "disk removed");
        Ok(report)
    }

    /// Puts an ISO into the VM's CD-ROM drive, or empties it (`iso` = `None`).
    pub async fn cdrom(&self, name: &str, iso: Option<&Path>) -> Result<CdromReport, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, if iso.is_some() { "cdrom insert" } else { "cdrom eject" })?;
        let (spec, generation) = self.reread(name)?;
        let paths = self.paths(&spec.name);
        let vm = spec.name.as_str();
        if let Some(p) = iso {
            if p.is_relative() {
                return Err(EngineError::BadRequest(format!(
                    "the ISO path must be absolute here: {}",
                    p.display()
                )));
            }
            if !p.is_file() {
                return Err(EngineError::MissingFile {
                    what: "CD-ROM image".into(),
                    path: p.to_path_buf(),
                    hint: "give the path of an existing ISO file".into(),
                });
            }
        }
        let mut new_spec = spec.clone();
        new_spec.cdrom = iso.map(Path::to_path_buf);
        new_spec.validate()?;
        let o = observe(&spec, &paths).await;
        let mut live = false;
        match o.state {
            RunState::Saved => return Err(saved_refusal(&spec, "change its CD-ROM")),
            RunState::Running | RunState::Paused => {
                let qmp = self.monitor(&spec, &paths).await?;
                let drive = find_block(&qmp, vm, "cd0").await?.is_some();
                match (drive, iso) {
                    (false, Some(_)) => {
                        return Err(EngineError::WrongState {
                            name: vm.to_string(),
                            state: o.state,
                            hint: format!(
                                "it has no CD-ROM drive (it started without a `cdrom`), and a drive cannot be hot-plugged; stop it (`corral vm stop {vm}`), run this again, and start it"
                            ),
                        })
                    }
                    (false, None) => {} // nothing in the guest; only the spec changes
                    (true, Some(p)) => {
                        let args = json!({
                            "id": "cd0",
                            "filename": p.display().to_string(),
                            "format": "raw",
                            "read-only-mode": "read-only",
                        });
                        qmp.execute("blockdev-change-medium", Some(args))
                            .await
                            .map_err(|e| {
                                EngineError::op(vm, "cdrom insert", format!("QEMU could not change the medium: {e}"))
                            })?;
                        live = true;
                    }
                    (true, None) => {
                        qmp.execute("eject", Some(json!({"id": "cd0", "force": true})))
                            .await
                            .map_err(|e| EngineError::op(vm, "cdrom eject", e.to_string()))?;
                        // The drive stays, but the next start builds none: not saveable.
                        note_layout_change(&paths, o.pid, "ejected the CD-ROM");
                        live = true;
                    }
                }
            }
            RunState::Stopped | RunState::Crashed => {}
        }
        if new_spec != spec {
            self.reg().update(&new_spec, generation)?;
        }
        Ok(CdromReport {
            vm: vm.to_string(),
            cdrom: new_spec.cdrom,
            previous: spec.cdrom,
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_changes_of_an_earlier_qemu_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            data: dir.path().join("d"),
            run: dir.path().to_path_buf(),
        };
        assert!(layout_changes(&paths, Some(7)).is_empty());
        note_layout_change(&paths, Some(7), "added disk a");
        note_layout_change(&paths, Some(8), "added disk b");
        assert_eq!(layout_changes(&paths, Some(8)), vec!["added disk b".to_string()]);
        assert!(layout_changes(&paths, Some(9)).is_empty());
        assert!(layout_changes(&paths, None).is_empty());
    }

    #[test]
    fn new_disk_names() {
        let spec = VmSpec::from_toml("name = \"v\"\n[[disks]]\nname = \"sys\"\nsize = \"1G\"\n").unwrap();
        assert!(check_new_name(&spec, "data1").is_ok());
        for bad in ["sys", "../x", "1data", "_x", "cd0", "hp2", ""] {
            assert!(check_new_name(&spec, bad).is_err(), "{bad}");
        }
        assert!(check_size(ByteSize(1 << 30)).is_ok());
        assert!(check_size(ByteSize(1000)).is_err());
        assert!(check_size(ByteSize((1 << 30) + 1)).is_err());
    }
}
