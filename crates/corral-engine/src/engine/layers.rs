//! Disk chains: external overlays, merging an overlay back (commit), the consolidation
//! policy, and `disk info`.
//!
//! A disk's `path` in the spec is always its active layer. An overlay is a qcow2 file in the
//! VM's directory (`<disk>.overlayN.qcow2`) whose backing file is the previous active layer;
//! that layer is made read-only (mode 0444) the moment it stops being written. On a running
//! VM both directions go through QMP (`blockdev-add` + `blockdev-snapshot` in one
//! `transaction`; `block-commit` + `job-complete`), on a stopped one through qemu-img. A
//! layer registered as a base (`bases` table) with linked clones standing on it is never
//! merged into.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use corral_qmp::Qmp;
use corral_types::{
    ChainLayer, CommitReport, ConsolidateItem, DiskChain, DiskFormat, DiskSpec, RunState, VmName, VmSpec,
};
use serde_json::{json, Value};

use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::paths::VmPaths;

pub(crate) fn disk_path(d: &DiskSpec, paths: &VmPaths) -> PathBuf {
    d.path.clone().unwrap_or_else(|| paths.disk(&d.name))
}

/// The disks an operation works on: the one named, or all of them.
pub(crate) fn select(spec: &VmSpec, disk: Option<&str>, op: &str) -> Result<Vec<usize>, EngineError> {
    if spec.disks.is_empty() {
        return Err(EngineError::invalid(spec.name.as_str(), op, "the VM has no disks"));
    }
    match disk {
        None => Ok((0..spec.disks.len()).collect()),
        Some(n) => super::diskmgmt::find_disk(spec, n).map(|(i, _)| vec![i]),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), EngineError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(EngineError::io(path))
}

fn next_overlay_path(paths: &VmPaths, disk: &str) -> PathBuf {
    (1..)
        .map(|n| paths.data.join(format!("{disk}.overlay{n}.qcow2")))
        .find(|p| !p.exists())
        .expect("a free overlay name")
}

/// A node name QEMU accepts (at most 31 characters, starting with a letter) and that no other
/// node of this QEMU has.
fn fresh_node_name() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("ovl{:x}", n & 0xffff_ffff_ffff)
}

/// The node a device reads from now (its active layer), found by the device id, which is the
/// disk's name.
pub(crate) async fn top_node(qmp: &Qmp, vm: &str, disk: &str) -> Result<String, EngineError> {
    match super::hotplug::find_block(qmp, vm, disk).await? {
        Some(Some(inserted)) => Ok(inserted.node_name),
        _ => Err(EngineError::op(
            vm,
            "disk",
            format!("QEMU shows no medium for device {disk}"),
        )),
    }
}

/// A commit whose corral died before it finished leaves its job in QEMU (an active commit
/// waits in `ready` for a `job-complete` that never comes) and the node busy. Nothing was
/// switched yet, so cancelling is safe: the overlay stays the active layer, and the data it
/// had already copied down is also still in the overlay.
async fn cancel_leftover_commits(qmp: &Qmp, vm: &str, disk: &str) -> Result<(), EngineError> {
    let prefix = format!("corral-commit-{disk}-");
    let leftovers: Vec<String> = qmp
        .query_jobs()
        .await
        .map_err(EngineError::qmp(vm))?
        .into_iter()
        .filter(|j| j.id.starts_with(&prefix))
        .map(|j| j.id)
        .collect();
    for id in leftovers {
        tracing::warn!(vm, job = id, "cancelling a commit left behind by an interrupted corral");
        let _ = qmp.execute("job-cancel", Some(json!({"id": id}))).await;
        for _ in 0..500 {
            let jobs = qmp.query_jobs().await.map_err(EngineError::qmp(vm))?;
            match jobs.iter().find(|j| j.id == id) {
                None => break,
                Some(j) if j.status == "concluded" => {
                    let _ = qmp.execute("job-dismiss", Some(json!({"id": id}))).await;
                }
                Some(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The format node that has `path` open.
async fn node_of_file(qmp: &Qmp, vm: &str, path: &Path) -> Result<String, EngineError> {
    let nodes = qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .map_err(EngineError::qmp(vm))?;
    let want = path.display().to_string();
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["file"].as_str() == Some(&want) && !matches!(n["drv"].as_str(), Some("file" | "host_device")))
        .and_then(|n| n["node-name"].as_str().map(str::to_string))
        .ok_or_else(|| EngineError::op(vm, "commit", format!("QEMU has no node for {want}")))
}

impl Engine {
    /// The VM whose directory holds `path`, if any.
    pub(crate) fn owner_of(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(self.cfg.data_dir.join("vms")).ok()?;
        let first = rest.components().next()?.as_os_str().to_str()?;
        VmName::new(first).ok().map(|n| n.to_string())
    }

    /// Reads one disk's chain and judges it against the consolidation policy.
    pub(crate) fn describe_disk(&self, vm: &str, d: &DiskSpec, paths: &VmPaths) -> Result<DiskChain, EngineError> {
        let top = disk_path(d, paths);
        let chain = self.img_chain(&top)?;
        let mut layers = vec![];
        for l in &chain {
            let base = self.reg().base(&l.filename)?;
            // A base records the VM that froze it, also when the image lives outside the
            // data dir (a disk defined with `path = …`); other layers belong to the VM
            // whose directory holds them.
            let owner = base
                .as_ref()
                .map(|b| b.owner.clone())
                .or_else(|| self.owner_of(&l.filename));
            let used_by = base
                .as_ref()
                .map(|b| b.users.iter().filter(|u| Some(*u) != owner.as_ref()).cloned().collect())
                .unwrap_or_default();
            layers.push(ChainLayer {
                path: l.filename.clone(),
                format: l.format.clone(),
                allocated: l.actual_size,
                virtual_size: l.virtual_size,
                owner,
                base: base.is_some(),
                used_by,
                snapshots: l.snapshots.len(),
            });
        }
        let virtual_size = layers.first().map(|l| l.virtual_size).unwrap_or(0);
        let below: u64 = layers.iter().skip(1).map(|l| l.allocated).sum();
        let overlay_ratio = (layers.len() > 1).then(|| 100.0 * layers[0].allocated as f64 / below.max(1) as f64);
        let committable = layers.len() > 1 && {
            let b = &layers[1];
            !b.base || (b.owner.as_deref() == Some(vm) && b.used_by.is_empty())
        };
        let policy = &self.cfg.disk;
        let over_limit = match overlay_ratio {
            None => None,
            Some(_) if layers[0].allocated > policy.consolidate_above.0 => Some(format!(
                "the overlay has allocated {}, above disk.consolidate_above = {}",
                corral_types::ByteSize(layers[0].allocated).approx(),
                policy.consolidate_above
            )),
            Some(r) if r > policy.consolidate_ratio.0 => Some(format!(
                "the overlay is {r:.1}% of the layers below it, above disk.consolidate_ratio = {}",
                policy.consolidate_ratio
            )),
            Some(_) => None,
        };
        Ok(DiskChain {
            disk: d.name.clone(),
            virtual_size,
            layers,
            overlay_ratio,
            over_limit,
            committable,
        })
    }

    /// Every disk's backing chain with allocation per layer and the policy verdict.
    pub fn disk_info(&self, name: &str) -> Result<Vec<DiskChain>, EngineError> {
        let spec = self.get_spec(name)?;
        let paths = self.paths(&spec.name);
        spec.disks
            .iter()
            .map(|d| self.describe_disk(spec.name.as_str(), d, &paths))
            .collect()
    }

    /// Puts a new overlay on top of the given disks (all at one instant on a running VM) and
    /// makes the previous active layers read-only. Updates `spec` in memory; the caller
    /// stores it. Returns the (old active layer, new overlay) pairs.
    pub(crate) async fn push_overlays(
        &self,
        spec: &mut VmSpec,
        paths: &VmPaths,
        idxs: &[usize],
        live: bool,
    ) -> Result<Vec<(PathBuf, PathBuf)>, EngineError> {
        let vm = spec.name.to_string();
        let mut made: Vec<(usize, PathBuf, PathBuf)> = vec![];
        let cleanup = |made: &[(usize, PathBuf, PathBuf)]| {
            for (_, _, new) in made {
                let _ = std::fs::remove_file(new);
            }
        };
        // Overlays go into the VM's directory, which a VM whose disks live elsewhere and
        // that never ran does not have yet.
        crate::paths::ensure_dir(&paths.data, 0o700).map_err(EngineError::io(&paths.data))?;
        for &i in idxs {
            let d = &spec.disks[i];
            let top = disk_path(d, paths);
            let made_one = self.img_info(&top).and_then(|info| {
                let new = next_overlay_path(paths, &d.name);
                self.create_overlay(&new, &top, &info.format, info.virtual_size)
                    .and_then(|_| set_mode(&new, 0o600))
                    .and_then(|_| self.give_to_qemu(&new))
                    .map(|_| new)
            });
            match made_one {
                Ok(new) => made.push((i, top, new)),
                Err(e) => {
                    cleanup(&made);
                    return Err(e);
                }
            }
        }
        if live {
            if let Err(e) = self.snapshot_live(spec, paths, &made).await {
                cleanup(&made);
                return Err(e);
            }
        }
        let mut out = vec![];
        for (i, old, new) in made {
            // Only files in corral's own tree: an image the user keeps elsewhere keeps its mode.
            if self.owner_of(&old).is_some() {
                if let Err(e) = set_mode(&old, 0o444) {
                    tracing::warn!(vm, "cannot make {} read-only: {e}", old.display());
                }
            }
            spec.disks[i].path = Some(new.clone());
            spec.disks[i].format = DiskFormat::Qcow2;
            out.push((old, new));
        }
        Ok(out)
    }

    /// `blockdev-add` each overlay, then one `transaction` of `blockdev-snapshot`s, so all
    /// disks switch at the same guest instant.
    async fn snapshot_live(
        &self,
        spec: &VmSpec,
        paths: &VmPaths,
        made: &[(usize, PathBuf, PathBuf)],
    ) -> Result<(), EngineError> {
        let vm = spec.name.as_str();
        let qmp = self.monitor(spec, paths).await?;
        let mut added: Vec<String> = vec![];
        let mut actions: Vec<Value> = vec![];
        let mut result = Ok(());
        for (i, _, new) in made {
            let node = format!("{}{}", fresh_node_name(), added.len());
            let add = json!({
                "driver": "qcow2",
                "node-name": node,
                "discard": "unmap",
                "backing": null,
                "file": {"driver": "file", "filename": new.display().to_string(), "aio": "threads"},
            });
            if let Err(e) = qmp.execute("blockdev-add", Some(add)).await {
                result = Err(EngineError::qmp(vm)(e));
                break;
            }
            added.push(node.clone());
            match top_node(&qmp, vm, &spec.disks[*i].name).await {
                Ok(cur) => actions.push(json!({"type": "blockdev-snapshot", "data": {"node": cur, "overlay": node}})),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = qmp
                .execute("transaction", Some(json!({"actions": actions})))
                .await
                .map(|_| ())
                .map_err(EngineError::qmp(vm));
            if result.is_err() && added.len() == made.len() {
                // The reply may be lost while the transaction took effect: then QEMU writes
                // the new overlays already, and they must not be removed.
                let mut all_in_use = false;
                if let Ok(q) = self.monitor(spec, paths).await {
                    all_in_use = true;
                    for ((i, _, _), node) in made.iter().zip(&added) {
                        all_in_use &= top_node(&q, vm, &spec.disks[*i].name).await.ok().as_ref() == Some(node);
                    }
                }
                if all_in_use {
                    return Ok(());
                }
            }
        }
        if result.is_err() {
            for node in added {
                let _ = qmp.execute("blockdev-del", Some(json!({"node-name": node}))).await;
            }
        }
        result
    }

    /// `corral disk overlay`: a new overlay on one disk or all of them.
    pub async fn disk_overlay(&self, name: &str, disk: Option<&str>) -> Result<Vec<DiskChain>, EngineError> {
        let (_lock, rec) = self.lock_and_get(name, "overlay")?;
        let mut spec = rec.spec;
        let paths = self.paths(&spec.name);
        let idxs = select(&spec, disk, "overlay")?;
        let o = observe(&spec, &paths).await;
        if o.state == RunState::Saved {
            return Err(saved(&spec));
        }
        for &i in &idxs {
            super::clone::refuse_hidden_snapshots(self, name, &spec.disks[i], &paths)?;
        }
        let made = self
            .push_overlays(&mut spec, &paths, &idxs, o.state.is_active())
            .await?;
        if let Err(e) = self.reg().update(&spec, rec.generation) {
            return Err(unrecorded_overlays(name, &made, e));
        }
        idxs.iter()
            .map(|&i| self.describe_disk(name, &spec.disks[i], &paths))
            .collect()
    }

    /// `corral disk commit`: merges the active overlay of one disk (or of every disk that has
    /// one) into the layer below, which becomes the active layer again.
    pub async fn disk_commit(&self, name: &str, disk: Option<&str>) -> Result<Vec<CommitReport>, EngineError> {
        let (_lock, rec) = self.lock_and_get(name, "commit")?;
        let mut spec = rec.spec;
        let mut generation = rec.generation;
        let paths = self.paths(&spec.name);
        let idxs = select(&spec, disk, "commit")?;
        let chains: Vec<(usize, DiskChain)> = idxs
            .iter()
            .map(|&i| self.describe_disk(name, &spec.disks[i], &paths).map(|c| (i, c)))
            .collect::<Result<_, _>>()?;
        let mut todo = vec![];
        for (i, c) in chains {
            if c.layers.len() < 2 {
                if disk.is_some() {
                    return Err(EngineError::invalid(
                        name,
                        "commit",
                        format!(
                            "disk {} has no overlay to merge (its chain is the single image {}); `corral disk overlay {name} {}` makes one",
                            c.disk,
                            c.layers[0].path.display(),
                            c.disk
                        ),
                    ));
                }
                continue;
            }
            check_committable(name, &c)?;
            todo.push((i, c));
        }
        if todo.is_empty() {
            return Err(EngineError::invalid(
                name,
                "commit",
                "none of its disks has an overlay to merge; `corral disk info` shows the chains",
            ));
        }
        let o = observe(&spec, &paths).await;
        if o.state == RunState::Saved {
            return Err(saved(&spec));
        }
        let mut out = vec![];
        for (i, c) in todo {
            let report = self
                .commit_one(&mut spec, &paths, &mut generation, i, &c, o.state.is_active())
                .await?;
            // Recorded: the overlay is no longer part of the VM.
            let _ = std::fs::remove_file(&report.overlay);
            out.push(report);
        }
        Ok(out)
    }

    async fn commit_one(
        &self,
        spec: &mut VmSpec,
        paths: &VmPaths,
        generation: &mut i64,
        i: usize,
        c: &DiskChain,
        live: bool,
    ) -> Result<CommitReport, EngineError> {
        let vm = spec.name.to_string();
        let started = Instant::now();
        let (top, into) = (&c.layers[0], &c.layers[1]);
        let job = self.job_begin(&vm, "commit", &c.disk)?;
        let ours = self.owner_of(&into.path).is_some();
        let mode_before = std::fs::metadata(&into.path)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        let result = async {
            if ours {
                set_mode(&into.path, 0o600)?;
                self.give_to_qemu(&into.path)?;
            }
            if live {
                let qmp = self.monitor(spec, paths).await?;
                cancel_leftover_commits(&qmp, &vm, &c.disk).await?;
                let top_node = top_node(&qmp, &vm, &c.disk).await?;
                let base_node = node_of_file(&qmp, &vm, &into.path).await?;
                let progress = |done: u64, total: u64| job.progress(done, total);
                qmp.run_job(
                    "block-commit",
                    json!({"device": top_node, "base-node": base_node}),
                    &format!("corral-commit-{}-{}", c.disk, super::jobs::now_ms()),
                    Some(&progress),
                )
                .await
                .map_err(|e| EngineError::op(&vm, "commit", e.to_string()))?;
                // The old top left the device's chain; close the file it still holds.
                if let Err(e) = qmp.execute("blockdev-del", Some(json!({"node-name": top_node}))).await {
                    tracing::debug!(vm, "blockdev-del {top_node}: {e}");
                }
            } else {
                let args: Vec<String> = ["commit", "-p", "-d", "-f", &top.format]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([top.path.display().to_string()])
                    .collect();
                self.qemu_img_job(
                    &args,
                    &format!("qemu-img commit {}", top.path.display()),
                    &job,
                    0,
                    100,
                    100,
                )
                .await?;
            }
            Ok::<(), EngineError>(())
        }
        .await;
        if let Err(e) = result {
            if let (Some(m), true) = (mode_before, ours) {
                let _ = set_mode(&into.path, m);
            }
            let e = EngineError::op(&vm, "commit", format!("disk {}: {e}", c.disk));
            job.finish(&Err::<(), _>(EngineError::op(&vm, "commit", e.to_string())), None);
            return Err(e);
        }
        let d = &mut spec.disks[i];
        d.path = Some(into.path.clone());
        d.format = if into.format == "raw" {
            DiskFormat::Raw
        } else {
            DiskFormat::Qcow2
        };
        // The merged overlay is stale from here on. Record the new active layer (and that it
        // is no longer a frozen base) in one transaction; if that fails, move the overlay
        // aside so that a start can never open it over the newer data in the layer below.
        let recorded = self.reg().atomically(|r| {
            *generation = r.update(spec, *generation)?;
            r.base_delete(&into.path)
        });
        if let Err(e) = recorded {
            let aside = top.path.with_extension("qcow2.merged");
            let _ = std::fs::rename(&top.path, &aside);
            let e = EngineError::op(
                &vm,
                "commit",
                format!(
                    "disk {} was merged into {}, but the registry could not record it ({e}); the merged overlay was moved to {}. Set the disk's path to {} with `corral vm edit {vm}`",
                    c.disk,
                    into.path.display(),
                    aside.display(),
                    into.path.display()
                ),
            );
            job.finish(&Err::<(), _>(EngineError::op(&vm, "commit", e.to_string())), None);
            return Err(e);
        }
        let report = CommitReport {
            vm: vm.clone(),
            disk: c.disk.clone(),
            overlay: top.path.clone(),
            into: into.path.clone(),
            merged_bytes: top.allocated,
            live,
            millis: started.elapsed().as_millis() as u64,
        };
        job.finish(
            &result,
            Some(format!("merged {} into {}", top.path.display(), into.path.display())),
        );
        Ok(report)
    }

    /// `corral disk consolidate`: merges every active overlay that is over a policy limit, on
    /// one VM or on all of them. A VM that cannot be handled now (busy, saved) is reported and
    /// the others go on.
    pub async fn disk_consolidate(&self, name: Option<&str>) -> Result<Vec<ConsolidateItem>, EngineError> {
        let specs: Vec<VmSpec> = match name {
            Some(n) => vec![self.get_spec(n)?],
            None => self.records()?.into_iter().map(|r| r.spec).collect(),
        };
        let mut out = vec![];
        for spec in specs {
            let vm = spec.name.to_string();
            let chains = match self.disk_info(&vm) {
                Ok(c) => c,
                Err(e) => {
                    out.push(item(&vm, "*", "failed", Some(e.to_string()), None));
                    continue;
                }
            };
            for c in chains {
                let Some(why) = c.over_limit.clone() else {
                    out.push(item(&vm, &c.disk, "within-limits", None, None));
                    continue;
                };
                if let Err(e) = check_committable(&vm, &c) {
                    out.push(item(&vm, &c.disk, "skipped", Some(format!("{why}, but {e}")), None));
                    continue;
                }
                match Box::pin(self.disk_commit(&vm, Some(&c.disk))).await {
                    Ok(mut r) => out.push(item(&vm, &c.disk, "merged", Some(why), r.pop())),
                    Err(e) => out.push(item(&vm, &c.disk, "failed", Some(e.to_string()), None)),
                }
            }
        }
        Ok(out)
    }
}

/// The registry failed after new overlays went into use (only a broken database gets here).
/// A running VM already writes them, so they must stay: say exactly where they are.
pub(crate) fn unrecorded_overlays(vm: &str, made: &[(PathBuf, PathBuf)], e: EngineError) -> EngineError {
    EngineError::op(
        vm,
        "overlay",
        format!(
            "the overlays were made ({}) but the registry could not record them ({e}); before the next start, set each disk's path in `corral vm edit {vm}` to its overlay",
            made.iter().map(|(_, n)| n.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
}

fn item(vm: &str, disk: &str, action: &str, reason: Option<String>, commit: Option<CommitReport>) -> ConsolidateItem {
    ConsolidateItem {
        vm: vm.to_string(),
        disk: disk.to_string(),
        action: action.to_string(),
        reason,
        commit,
    }
}

/// Refuses merges that would damage something: into a base other VMs stand on, or dropping
/// internal snapshots kept in the overlay.
fn check_committable(vm: &str, c: &DiskChain) -> Result<(), EngineError> {
    let (top, below) = (&c.layers[0], &c.layers[1]);
    if !c.committable {
        let owner = below.owner.clone().unwrap_or_else(|| "?".into());
        let users = if below.used_by.is_empty() {
            owner.clone()
        } else {
            below.used_by.join(", ")
        };
        return Err(EngineError::in_use(
            vm,
            "commit",
            format!(
                "disk {} stands on the base image {} (of VM {owner}), which linked clones share ({users}); merging would change them all. Make an independent copy with `corral vm clone {vm} NEW --full` instead",
                c.disk,
                below.path.display()
            ),
        ));
    }
    if top.snapshots > 0 {
        return Err(EngineError::invalid(
            vm,
            "commit",
            format!(
                "the overlay of disk {} holds {} internal snapshot(s), which a merge would lose; delete them first (`corral snapshot list {vm}`)",
                c.disk, top.snapshots
            ),
        ));
    }
    Ok(())
}

pub(crate) fn saved(spec: &VmSpec) -> EngineError {
    EngineError::WrongState {
        name: spec.name.to_string(),
        state: RunState::Saved,
        hint: format!(
            "its saved memory belongs to the disks as they are; start it (`corral vm start {}`) first",
            spec.name
        ),
    }
}
