//! Clones and base images.
//!
//! - A **full clone** is an independent copy: `qemu-img convert` flattens each disk's chain
//!   (or one internal snapshot of it) into a new qcow2 in the clone's directory.
//! - A **linked clone** is a qcow2 overlay on a read-only base that stays in the source VM's
//!   directory. Without `--from-snapshot` the base is the source's current active layer: it is
//!   frozen (the source itself moves onto a new overlay, live if it runs), so cloning costs
//!   two small files and no copying. A second clone of an unchanged, stopped source reuses
//!   the same base instead of growing the chain. With `--from-snapshot NAME` the snapshot is
//!   exported once into `<disk>@NAME.base.qcow2` and every later clone of it reuses that.
//!
//! Bases and the VMs standing on them are recorded in the registry (`bases`, `base_users`),
//! which is what `image list` counts and what makes `vm delete` of a source with clones refuse.

use std::path::{Path, PathBuf};
use std::time::Instant;

use corral_types::{CloneReport, ClonedDisk, DiskFormat, ImageInfo, RunState, VmName, VmSpec};

use super::layers::{disk_path, set_mode};
use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::paths::{ensure_dir, VmPaths};

/// Whether an overlay holds no data of its own (every extent comes from below).
fn overlay_is_empty(engine: &Engine, path: &Path) -> Result<bool, EngineError> {
    let p = path.display().to_string();
    let out = engine.qemu_img(&["map", "-U", "--output=json", &p], &format!("qemu-img map {p}"))?;
    let map: Vec<serde_json::Value> = serde_json::from_slice(&out).map_err(|e| EngineError::Tool {
        what: format!("qemu-img map {p}"),
        message: e.to_string(),
    })?;
    Ok(map
        .iter()
        .all(|e| e["depth"].as_u64() != Some(0) || e["present"].as_bool() == Some(false)))
}

/// An overlay on a disk whose active layer holds internal snapshots would hide them from
/// `snapshot list/revert` for good (they stay in the layer below, which becomes read-only).
pub(crate) fn refuse_hidden_snapshots(
    engine: &Engine,
    vm: &str,
    d: &corral_types::DiskSpec,
    paths: &VmPaths,
) -> Result<(), EngineError> {
    let info = engine.img_info(&disk_path(d, paths))?;
    if info.snapshots.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = info.snapshots.iter().map(|s| s.name.as_str()).collect();
    Err(EngineError::invalid(
        vm,
        "overlay",
        format!(
            "disk {} holds internal snapshots ({}); a new layer on top would hide them from `corral snapshot` for good. Delete them first, or make linked clones from one with --from-snapshot NAME",
            d.name,
            names.join(", ")
        ),
    ))
}

impl Engine {
    /// `corral vm clone SRC NEW [--linked|--full] [--from-snapshot NAME]`.
    pub async fn clone_vm(
        &self,
        src: &str,
        new: &str,
        linked: bool,
        from_snapshot: Option<&str>,
    ) -> Result<CloneReport, EngineError> {
        let started = Instant::now();
        let new_name = VmName::new(new)?;
        if self.reg().get(new_name.as_str())?.is_some() {
            return Err(EngineError::Exists(new_name.to_string()));
        }
        let (_src_lock, rec) = self.lock_and_get(src, "clone")?;
        let mut sspec = rec.spec;
        let _new_lock = self.lock(&new_name, "clone")?;
        if self.reg().get(new_name.as_str())?.is_some() {
            return Err(EngineError::Exists(new_name.to_string()));
        }
        let spaths = self.paths(&sspec.name);
        let npaths = self.paths(&new_name);
        if npaths.data.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(EngineError::invalid(
                src,
                "clone",
                format!(
                    "the directory {} already holds files (left from an earlier VM {new}?); move them away or pick another name",
                    npaths.data.display()
                ),
            ));
        }
        if let Some(s) = from_snapshot {
            self.find_snapshot(&sspec, s)?;
        }
        let o = observe(&sspec, &spaths).await;
        if !linked && from_snapshot.is_none() && o.state.is_active() {
            return Err(EngineError::WrongState {
                name: src.to_string(),
                state: o.state,
                hint: format!(
                    "a full copy of disks that are being written would not be consistent; stop it, take a snapshot and use --from-snapshot NAME (`corral snapshot create {src} NAME`), or make a --linked clone"
                ),
            });
        }
        if linked && from_snapshot.is_none() {
            if o.state == RunState::Saved {
                // Its saved state would resume on the old layers and write into the base.
                return Err(EngineError::WrongState {
                    name: src.to_string(),
                    state: o.state,
                    hint: format!(
                        "its saved memory would resume on the disk that becomes the clones' base; start it (`corral vm start {src}`) first, or clone --from-snapshot NAME"
                    ),
                });
            }
            for d in &sspec.disks {
                refuse_hidden_snapshots(self, src, d, &spaths)?;
            }
        }

        let mut nspec = sspec.clone();
        nspec.name = new_name.clone();
        nspec.uuid = None;
        nspec.description = Some(match from_snapshot {
            Some(s) => format!("clone of {src} at snapshot {s}"),
            None => format!("clone of {src}"),
        });
        if nspec.network.mac.is_some() {
            nspec.network.mac = None;
        }
        let mut cleared = vec![];
        if nspec.display.vnc_port.take().is_some() {
            cleared.push("display.vnc_port (a fixed port belongs to one VM)".to_string());
        }
        if !nspec.network.forwards.is_empty() {
            nspec.network.forwards.clear();
            cleared.push("network.forwards (host ports belong to one VM)".to_string());
        }
        self.normalize(&mut nspec, super::define::Given::All);

        let kind = if linked { "linked clone" } else { "full clone" };
        let job = self.job_begin(src, "clone", &format!("{kind} {src} → {new}"))?;
        ensure_dir(&npaths.data, 0o700).map_err(EngineError::io(&npaths.data))?;
        let mut created: Vec<PathBuf> = vec![];
        let result = async {
            let disks = if linked {
                self.link_disks(
                    &mut sspec,
                    rec.generation,
                    &spaths,
                    &npaths,
                    &mut nspec,
                    from_snapshot,
                    o.state,
                    &job,
                    &mut created,
                )
                .await?
            } else {
                self.copy_disks(&sspec, &spaths, &npaths, &mut nspec, from_snapshot, &job, &mut created)
                    .await?
            };
            // The clone and its claims on the bases appear together, or not at all.
            self.reg().atomically(|r| {
                r.insert(&nspec)?;
                for d in disks.iter().filter_map(|d| d.base.as_ref()) {
                    r.base_add_user(d, new_name.as_str())?;
                }
                Ok(())
            })?;
            Ok::<_, EngineError>(disks)
        }
        .await;
        let disks = match result {
            Ok(d) => d,
            Err(e) => {
                for p in &created {
                    let _ = std::fs::remove_file(p);
                }
                let _ = std::fs::remove_dir(&npaths.data);
                let _ = self.reg().base_forget_vm(new_name.as_str());
                let _ = self.reg().delete(new_name.as_str());
                job.finish(&Err::<(), _>(EngineError::op(src, "clone", e.to_string())), None);
                return Err(e);
            }
        };
        let report = CloneReport {
            name: new.to_string(),
            source: src.to_string(),
            linked,
            from_snapshot: from_snapshot.map(str::to_string),
            disks,
            cleared,
            millis: started.elapsed().as_millis() as u64,
        };
        job.finish(&Ok::<(), EngineError>(()), Some(format!("made {kind} {new}")));
        tracing::info!(src, new, linked, "cloned");
        Ok(report)
    }

    /// Full clone: one `qemu-img convert` per disk, progress weighted by virtual size.
    #[allow(clippy::too_many_arguments)]
    async fn copy_disks(
        &self,
        sspec: &VmSpec,
        spaths: &VmPaths,
        npaths: &VmPaths,
        nspec: &mut VmSpec,
        snapshot: Option<&str>,
        job: &super::jobs::Job<'_>,
        created: &mut Vec<PathBuf>,
    ) -> Result<Vec<ClonedDisk>, EngineError> {
        let sources: Vec<(PathBuf, u64)> = sspec
            .disks
            .iter()
            .map(|d| {
                let p = disk_path(d, spaths);
                self.img_info(&p).map(|i| (p, i.virtual_size))
            })
            .collect::<Result<_, _>>()?;
        let total: u64 = sources.iter().map(|s| s.1).sum();
        let mut done = 0;
        let mut out = vec![];
        for (i, (src, size)) in sources.into_iter().enumerate() {
            let name = sspec.disks[i].name.clone();
            let dst = npaths.disk(&name);
            let mut args: Vec<String> = vec!["convert".into(), "-p".into(), "-O".into(), "qcow2".into()];
            if let Some(s) = snapshot {
                // -U: the source may run; an internal snapshot's clusters never change.
                args.extend(["-U".into(), "-l".into(), format!("snapshot.name={s}")]);
            }
            args.extend([src.display().to_string(), dst.display().to_string()]);
            created.push(dst.clone());
            self.qemu_img_job(
                &args,
                &format!("qemu-img convert {}", src.display()),
                job,
                done,
                size,
                total,
            )
            .await?;
            done += size;
            nspec.disks[i].path = Some(dst.clone());
            nspec.disks[i].format = DiskFormat::Qcow2;
            out.push(ClonedDisk {
                disk: name,
                path: dst,
                base: None,
            });
        }
        Ok(out)
    }

    /// Linked clone: find or make a frozen base per disk, then an overlay on it.
    #[allow(clippy::too_many_arguments)]
    async fn link_disks(
        &self,
        sspec: &mut VmSpec,
        generation: i64,
        spaths: &VmPaths,
        npaths: &VmPaths,
        nspec: &mut VmSpec,
        snapshot: Option<&str>,
        state: RunState,
        job: &super::jobs::Job<'_>,
        created: &mut Vec<PathBuf>,
    ) -> Result<Vec<ClonedDisk>, EngineError> {
        let src = sspec.name.to_string();
        let mut bases: Vec<Option<PathBuf>> = vec![None; sspec.disks.len()];
        match snapshot {
            Some(s) => {
                for (i, d) in sspec.disks.iter().enumerate() {
                    bases[i] = Some(self.export_snapshot_base(&src, d, spaths, s, job).await?);
                }
            }
            None => {
                // Reuse: a stopped source whose active overlay is still empty on a base of its own.
                let mut freeze = vec![];
                for (i, d) in sspec.disks.iter().enumerate() {
                    let c = self.describe_disk(&src, d, spaths)?;
                    let reusable = !state.is_active()
                        && c.layers.len() > 1
                        && c.layers[1].base
                        && c.layers[1].owner.as_deref() == Some(src.as_str())
                        && c.layers[0].snapshots == 0
                        && overlay_is_empty(self, &c.layers[0].path)?;
                    if reusable {
                        bases[i] = Some(c.layers[1].path.clone());
                    } else {
                        freeze.push(i);
                    }
                }
                if !freeze.is_empty() {
                    let made = self.push_overlays(sspec, spaths, &freeze, state.is_active()).await?;
                    let recorded = self.reg().atomically(|r| {
                        r.update(sspec, generation)?;
                        for (&i, (old, _)) in freeze.iter().zip(&made) {
                            r.base_insert(old, &src, &sspec.disks[i].name, None)?;
                            r.base_add_user(old, &src)?;
                        }
                        Ok(())
                    });
                    if let Err(e) = recorded {
                        return Err(super::layers::unrecorded_overlays(&src, &made, e));
                    }
                    for (&i, (old, _)) in freeze.iter().zip(made) {
                        bases[i] = Some(old);
                    }
                }
            }
        }
        let mut out = vec![];
        for (i, base) in bases.into_iter().enumerate() {
            let base = base.expect("every disk has a base");
            let info = self.img_info(&base)?;
            let name = sspec.disks[i].name.clone();
            let dst = npaths.disk(&name);
            created.push(dst.clone());
            self.create_overlay(&dst, &base, &info.format, info.virtual_size)?;
            nspec.disks[i].path = Some(dst.clone());
            nspec.disks[i].format = DiskFormat::Qcow2;
            out.push(ClonedDisk {
                disk: name,
                path: dst,
                base: Some(base),
            });
        }
        Ok(out)
    }

    /// The read-only base holding disk `d` as it was at internal snapshot `snap`, exported
    /// on first use.
    async fn export_snapshot_base(
        &self,
        src: &str,
        d: &corral_types::DiskSpec,
        spaths: &VmPaths,
        snap: &str,
        job: &super::jobs::Job<'_>,
    ) -> Result<PathBuf, EngineError> {
        // The snapshot's date is part of the name: a snapshot deleted and taken again under
        // the same name is different content and gets its own export.
        let top = disk_path(d, spaths);
        let info = self.img_info(&top)?;
        let taken = info
            .snapshots
            .iter()
            .find(|s| s.name == snap)
            .map(|s| s.date_sec)
            .ok_or_else(|| EngineError::invalid(src, "clone", format!("disk {} has no snapshot {snap:?}", d.name)))?;
        let base = spaths.data.join(format!("{}@{snap}-{taken}.base.qcow2", d.name));
        if base.is_file() && self.reg().base(&base)?.is_some() {
            return Ok(base);
        }
        let size = info.virtual_size;
        let tmp = base.with_extension("qcow2.tmp");
        let args: Vec<String> = vec![
            "convert".into(),
            "-p".into(),
            "-U".into(),
            "-O".into(),
            "qcow2".into(),
            "-l".into(),
            format!("snapshot.name={snap}"),
            top.display().to_string(),
            tmp.display().to_string(),
        ];
        let r = self
            .qemu_img_job(&args, &format!("export of snapshot {snap}"), job, 0, size, size)
            .await
            .and_then(|_| std::fs::rename(&tmp, &base).map_err(EngineError::io(&base)))
            .and_then(|_| set_mode(&base, 0o444));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.reg().base_insert(&base, src, &d.name, Some(snap))?;
        Ok(base)
    }

    /// `corral image list`: every frozen base with the VMs standing on it.
    pub fn image_list(&self) -> Result<Vec<ImageInfo>, EngineError> {
        let rows = self.reg().bases()?;
        Ok(rows
            .into_iter()
            .map(|b| {
                let (allocated, virtual_size) = self
                    .img_info(&b.path)
                    .map(|i| (i.actual_size, i.virtual_size))
                    .unwrap_or((0, 0));
                let clones = b.users.iter().filter(|u| **u != b.owner).count();
                ImageInfo {
                    path: b.path,
                    owner: b.owner,
                    disk: b.disk,
                    snapshot: b.snapshot,
                    created: b.created,
                    allocated,
                    virtual_size,
                    used_by: b.users,
                    clones,
                }
            })
            .collect())
    }
}

/// For messages: `3 linked clones stand`.
pub(crate) fn clone_count(names: &[String]) -> String {
    match names.len() {
        1 => "1 linked clone stands".to_string(),
        n => format!("{n} linked clones stand"),
    }
}
