//! Internal snapshots (inside the qcow2 images).
//!
//! On a running VM they go through QMP: `snapshot-save` (disks + memory, a job),
//! `snapshot-load` and `snapshot-delete` (jobs), or a `transaction` of
//! `blockdev-snapshot-internal-sync` for a disk-only snapshot. On a stopped VM they go
//! through `qemu-img snapshot`. The caller does not choose: the VM's state decides.
//!
//! QEMU 7.2 leaves the VM paused in `restore-vm` after `snapshot-load`, whether it worked or
//! not. After a successful load corral continues the guest if it ran before; after a failed
//! load the guest's memory is undefined, so corral stops QEMU and says so.

use std::path::PathBuf;

use corral_types::{DiskFormat, RunState, VmName, VmSpec};
use serde::Serialize;
use serde_json::json;

use super::state::{clear_runtime, observe, uuid_of};
use super::Engine;
use crate::error::EngineError;
use crate::paths::VmPaths;
use crate::process::wait_gone;

/// One internal snapshot, present on every disk of the VM.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix seconds.
    pub date: i64,
    /// Size of the saved memory and device state (0: disks only).
    pub vm_state_size: u64,
    pub memory: bool,
    /// The guest's clock (time it had been running) when the snapshot was taken, in seconds.
    pub vm_clock_seconds: f64,
    /// Bytes the images have allocated on the host now (all layers and snapshots share them).
    pub disk_allocated: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

struct Disk {
    path: PathBuf,
}

fn disks(spec: &VmSpec, paths: &VmPaths) -> Result<Vec<Disk>, EngineError> {
    if spec.disks.is_empty() {
        return Err(EngineError::op(
            spec.name.as_str(),
            "snapshot",
            "the VM has no disks to snapshot",
        ));
    }
    spec.disks
        .iter()
        .map(|d| {
            if d.format != DiskFormat::Qcow2 {
                return Err(EngineError::op(
                    spec.name.as_str(),
                    "snapshot",
                    format!("disk {} is {}; internal snapshots need qcow2 disks", d.name, d.format),
                ));
            }
            Ok(Disk {
                path: d.path.clone().unwrap_or_else(|| paths.disk(&d.name)),
            })
        })
        .collect()
}

impl Engine {
    /// Snapshots present on every disk, oldest first.
    pub fn snapshot_list(&self, name: &str) -> Result<Vec<SnapshotInfo>, EngineError> {
        let spec = self.get_spec(name)?;
        let disks = disks(&spec, &self.paths(&spec.name))?;
        let infos: Vec<super::img::ImgInfo> = disks.iter().map(|d| self.img_info(&d.path)).collect::<Result<_, _>>()?;
        let allocated: u64 = infos.iter().map(|i| i.actual_size).sum();
        let mut out: Vec<SnapshotInfo> = infos[0]
            .snapshots
            .iter()
            .filter(|s| infos[1..].iter().all(|i| i.snapshots.iter().any(|o| o.name == s.name)))
            .map(|s| SnapshotInfo {
                name: s.name.clone(),
                date: s.date_sec,
                vm_state_size: s.vm_state_size,
                memory: s.vm_state_size > 0,
                vm_clock_seconds: s.vm_clock_sec as f64 + s.vm_clock_nsec as f64 / 1e9,
                disk_allocated: allocated,
                description: None,
            })
            .collect();
        let reg = self.reg();
        for s in &mut out {
            s.description = reg.snapshot_note(spec.name.as_str(), &s.name)?;
        }
        drop(reg);
        out.sort_by_key(|s| s.date);
        Ok(out)
    }

    pub(crate) fn find_snapshot(&self, spec: &VmSpec, snap: &str) -> Result<SnapshotInfo, EngineError> {
        self.snapshot_list(spec.name.as_str())?
            .into_iter()
            .find(|s| s.name == snap)
            .ok_or_else(|| {
                EngineError::invalid(
                    spec.name.as_str(),
                    "snapshot",
                    format!(
                        "VM {} has no snapshot named {snap:?}; `corral snapshot list {}` shows them",
                        spec.name, spec.name
                    ),
                )
            })
    }

    /// Takes a snapshot. On a running VM it includes memory unless `no_memory`.
    pub async fn snapshot_create(
        &self,
        name: &str,
        snap: &str,
        description: Option<&str>,
        no_memory: bool,
    ) -> Result<SnapshotInfo, EngineError> {
        VmName::new(snap).map_err(|e| EngineError::invalid(name, "snapshot", format!("bad snapshot name: {e}")))?;
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "snapshot")?;
        let paths = self.paths(&spec.name);
        let disks = disks(&spec, &paths)?;
        if self.snapshot_list(name)?.iter().any(|s| s.name == snap) {
            return Err(EngineError::invalid(
                name,
                "snapshot",
                format!("a snapshot named {snap:?} already exists; delete it first or pick another name"),
            ));
        }
        let o = observe(&spec, &paths).await;
        match o.state {
            RunState::Running | RunState::Paused => {
                let qmp = self.monitor(&spec, &paths).await?;
                let nodes = live_nodes(&qmp, &spec).await?;
                if no_memory {
                    let actions: Vec<_> = nodes
                        .iter()
                        .map(
                            |n| json!({"type": "blockdev-snapshot-internal-sync", "data": {"device": n, "name": snap}}),
                        )
                        .collect();
                    qmp.execute("transaction", Some(json!({"actions": actions})))
                        .await
                        .map_err(EngineError::qmp(name))?;
                } else {
                    let args = json!({"tag": snap, "vmstate": nodes[0], "devices": nodes});
                    let job = self.job_begin(name, "snapshot", snap)?;
                    let progress = |done: u64, total: u64| job.progress(done, total);
                    let r = qmp
                        .run_job("snapshot-save", args, &format!("corral-snap-{snap}"), Some(&progress))
                        .await
                        .map_err(|e| EngineError::op(name, "snapshot", e.to_string()));
                    job.finish(&r, Some(format!("took snapshot {snap} with memory")));
                    r?;
                }
            }
            RunState::Stopped | RunState::Crashed => {
                let mut done: Vec<&Disk> = vec![];
                for d in &disks {
                    let p = d.path.display().to_string();
                    if let Err(e) =
                        self.qemu_img(&["snapshot", "-c", snap, &p], &format!("qemu-img snapshot -c on {p}"))
                    {
                        for u in done {
                            let _ = self.qemu_img(&["snapshot", "-d", snap, &u.path.display().to_string()], "undo");
                        }
                        return Err(e);
                    }
                    done.push(d);
                }
            }
            RunState::Saved => return Err(saved_refusal(&spec)),
        }
        self.reg().set_snapshot_note(spec.name.as_str(), snap, description)?;
        self.find_snapshot(&spec, snap)
    }

    /// Goes back to a snapshot: disks and, on a running VM, memory.
    pub async fn snapshot_revert(&self, name: &str, snap: &str) -> Result<SnapshotInfo, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "revert")?;
        let paths = self.paths(&spec.name);
        let disks = disks(&spec, &paths)?;
        let info = self.find_snapshot(&spec, snap)?;
        let o = observe(&spec, &paths).await;
        match o.state {
            RunState::Running | RunState::Paused => {
                if !info.memory {
                    return Err(EngineError::op(name, "revert", format!(
                        "snapshot {snap:?} holds no memory, so a running VM cannot go back to it; stop the VM (`corral vm stop {name}`) and revert its disks"
                    )));
                }
                let qmp = self.monitor(&spec, &paths).await?;
                let nodes = live_nodes(&qmp, &spec).await?;
                let args = json!({"tag": snap, "vmstate": nodes[0], "devices": nodes});
                let job = self.job_begin(name, "revert", snap)?;
                let progress = |done: u64, total: u64| job.progress(done, total);
                let loaded = qmp
                    .run_job("snapshot-load", args, &format!("corral-load-{snap}"), Some(&progress))
                    .await;
                job.finish(
                    &loaded
                        .as_ref()
                        .map_err(|e| EngineError::op(name, "revert", e.to_string())),
                    Some(format!("reverted to {snap}")),
                );
                match loaded {
                    Ok(()) => {
                        // snapshot-load leaves the VM paused in restore-vm; resume what ran.
                        if o.state == RunState::Running {
                            qmp.execute("cont", None).await.map_err(EngineError::qmp(name))?;
                        }
                    }
                    Err(e) => {
                        let _ = qmp.execute("quit", None).await;
                        drop(qmp);
                        if let Some(pid) = o.pid {
                            wait_gone(pid, &uuid_of(&spec), std::time::Duration::from_secs(15)).await;
                        }
                        clear_runtime(&paths);
                        return Err(EngineError::op(name, "revert", format!(
                            "QEMU could not load snapshot {snap:?} ({e}); the guest's memory was left undefined, so corral stopped the VM. Its disks may already be at the snapshot; start it to boot from them"
                        )));
                    }
                }
            }
            RunState::Stopped | RunState::Crashed => {
                for d in &disks {
                    let p = d.path.display().to_string();
                    // A backup's dirty bitmap tracks changes since that backup, which a jump to
                    // a snapshot is not; qemu-img also refuses to apply a snapshot under one.
                    // Dropping corral's bitmaps makes the next backup read the disk in full.
                    self.drop_backup_bitmaps(&p)?;
                    self.qemu_img(&["snapshot", "-a", snap, &p], &format!("qemu-img snapshot -a on {p}"))?;
                }
            }
            RunState::Saved => return Err(saved_refusal(&spec)),
        }
        Ok(info)
    }

    pub async fn snapshot_delete(&self, name: &str, snap: &str) -> Result<(), EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "snapshot delete")?;
        let paths = self.paths(&spec.name);
        let disks = disks(&spec, &paths)?;
        self.find_snapshot(&spec, snap)?;
        let o = observe(&spec, &paths).await;
        if o.state == RunState::Saved {
            return Err(saved_refusal(&spec));
        }
        if o.state.is_active() {
            let qmp = self.monitor(&spec, &paths).await?;
            let nodes = live_nodes(&qmp, &spec).await?;
            qmp.run_job(
                "snapshot-delete",
                json!({"tag": snap, "devices": nodes}),
                &format!("corral-del-{snap}"),
                None,
            )
            .await
            .map_err(|e| EngineError::op(name, "snapshot delete", e.to_string()))?;
        } else {
            for d in &disks {
                let p = d.path.display().to_string();
                self.qemu_img(&["snapshot", "-d", snap, &p], &format!("qemu-img snapshot -d on {p}"))?;
            }
        }
        self.reg().set_snapshot_note(spec.name.as_str(), snap, None)?;
        Ok(())
    }
}

/// The node each disk reads from now, by device id: `drive-NAME` at start, but an overlay or
/// a merge since then changes it.
async fn live_nodes(qmp: &corral_qmp::Qmp, spec: &VmSpec) -> Result<Vec<String>, EngineError> {
    let mut out = vec![];
    for d in &spec.disks {
        out.push(super::layers::top_node(qmp, spec.name.as_str(), &d.name).await?);
    }
    Ok(out)
}

fn saved_refusal(spec: &VmSpec) -> EngineError {
    EngineError::WrongState {
        name: spec.name.to_string(),
        state: RunState::Saved,
        hint: format!(
            "its saved memory belongs to the disks as they are; start it (`corral vm start {}`) first, then take or revert snapshots",
            spec.name
        ),
    }
}

impl Engine {
    /// Removes the `corral-…` persistent dirty bitmaps of a (closed) qcow2 image.
    fn drop_backup_bitmaps(&self, image: &str) -> Result<(), EngineError> {
        let info = self.img_info(std::path::Path::new(image))?;
        let names: Vec<&str> = info.bitmaps().filter(|n| n.starts_with("corral-")).collect();
        for n in names {
            tracing::info!(image, bitmap = %n, "removing a backup bitmap before reverting to a snapshot");
            self.qemu_img(
                &["bitmap", "--remove", image, n],
                &format!("qemu-img bitmap --remove {n} on {image}"),
            )?;
        }
        Ok(())
    }
}
