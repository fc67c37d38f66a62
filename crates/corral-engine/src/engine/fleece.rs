//! Point-in-time exports of a running VM's disks over NBD ("image fleecing"): the read path
//! of live backups. The guest is never paused beyond one QMP `transaction`, and no snapshot
//! chain is left behind.
//!
//! For each disk, at one instant (a single `transaction`):
//! - `blockdev-backup sync=none` from the disk's active node into a temporary qcow2 (the
//!   fleece) whose backing is that node: from now on QEMU copies every block the guest is
//!   about to overwrite into the fleece first, so the fleece reads as the disk at the instant;
//! - the bitmap that tracked changes since the last backup is disabled (frozen: exactly the
//!   blocks to read for an incremental) and a new persistent bitmap starts tracking changes
//!   for the next backup.
//!
//! Then an NBD server on a unix socket exports each fleece read-only, with the frozen bitmap
//! (QEMU finds it down the fleece's backing chain). Closing tears everything down; on success
//! the frozen bitmap is removed (the new one is now the reference), on failure it is merged
//! back so that no change is ever forgotten: a failed backup never makes the next incremental
//! wrong.

use std::path::PathBuf;

use corral_qmp::Qmp;
use corral_types::VmSpec;
use serde::Serialize;
use serde_json::{json, Value};

use super::layers::top_node;
use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::lock::VmLock;

/// What to export for one disk.
#[derive(Debug, Clone)]
pub struct FleeceRequest {
    pub disk: String,
    /// The persistent bitmap that tracked changes since the last backup; `None` for a full read.
    pub since_bitmap: Option<String>,
    /// The persistent bitmap to start now, for the next backup.
    pub new_bitmap: String,
}

/// One exported disk.
#[derive(Debug, Clone, Serialize)]
pub struct FleeceDisk {
    pub disk: String,
    /// NBD export name on the socket.
    pub export: String,
    pub size: u64,
    /// The frozen bitmap exported with it (`qemu:dirty-bitmap:NAME` on the wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmap: Option<String>,
    #[serde(skip)]
    node: String,
    #[serde(skip)]
    fleece_node: String,
    #[serde(skip)]
    fleece_file: PathBuf,
    #[serde(skip)]
    job: String,
    #[serde(skip)]
    new_bitmap: String,
}

/// A live point-in-time export. Hold it while reading, then [`Engine::fleece_close`] it.
pub struct Fleece {
    pub vm: String,
    /// Unix socket of the NBD server (`nbd+unix:///EXPORT?socket=PATH`).
    pub socket: PathBuf,
    pub disks: Vec<FleeceDisk>,
    qmp: Qmp,
    _lock: VmLock,
}

fn qmp_err(vm: &str) -> impl FnOnce(corral_qmp::QmpError) -> EngineError + '_ {
    EngineError::qmp(vm)
}

/// The `dirty-bitmaps` QEMU shows for the node of a device (name → recording).
pub(crate) async fn bitmaps_of(qmp: &Qmp, vm: &str, disk: &str) -> Result<Vec<(String, bool)>, EngineError> {
    let blocks: Value = qmp.execute("query-block", None).await.map_err(qmp_err(vm))?;
    let peripheral = format!("/machine/peripheral/{disk}");
    let entry = blocks.as_array().into_iter().flatten().find(|b| {
        let q = b["qdev"].as_str().unwrap_or("");
        q == disk || q == peripheral || q.starts_with(&format!("{peripheral}/"))
    });
    Ok(entry
        .and_then(|b| b["inserted"]["dirty-bitmaps"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                m["recording"].as_bool().unwrap_or(false),
            ))
        })
        .collect())
}

impl Engine {
    /// Starts a point-in-time export of a running (or paused) VM's disks. Holds the VM's lock
    /// until closed.
    pub async fn fleece_open(&self, name: &str, requests: &[FleeceRequest]) -> Result<Fleece, EngineError> {
        let (lock, rec) = self.lock_and_get(name, "backup")?;
        let spec = rec.spec;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        if !o.state.is_active() {
            return Err(EngineError::WrongState {
                name: name.to_string(),
                state: o.state,
                hint: "a live export needs the VM running; a stopped VM's disks are read directly".into(),
            });
        }
        let qmp = self.monitor(&spec, &paths).await?;
        let mut disks = vec![];
        for r in requests {
            super::diskmgmt::find_disk(&spec, &r.disk)?;
            let node = top_node(&qmp, name, &r.disk).await?;
            if let Some(b) = &r.since_bitmap {
                if !bitmaps_of(&qmp, name, &r.disk).await?.iter().any(|(n, _)| n == b) {
                    return Err(EngineError::invalid(
                        name,
                        "backup",
                        format!("disk {} has no dirty bitmap {b:?}; read it in full", r.disk),
                    ));
                }
            }
            let info: Value = qmp
                .execute("query-named-block-nodes", Some(json!({"flat": true})))
                .await
                .map_err(qmp_err(name))?;
            let size = info
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["node-name"] == node.as_str())
                .and_then(|n| n["image"]["virtual-size"].as_u64())
                .unwrap_or(0);
            let tag = format!("{}{}", r.disk, super::jobs::now_ms() % 1_000_000_000);
            disks.push(FleeceDisk {
                disk: r.disk.clone(),
                export: r.disk.clone(),
                size,
                bitmap: r.since_bitmap.clone(),
                node,
                fleece_node: format!("fl-{tag}"),
                fleece_file: paths.run.join(format!("fleece-{}.qcow2", r.disk)),
                job: format!("fleece-{tag}"),
                new_bitmap: r.new_bitmap.clone(),
            });
        }
        let socket = paths.run.join("nbd.sock");
        let mut fleece = Fleece {
            vm: name.to_string(),
            socket,
            disks,
            qmp,
            _lock: lock,
        };
        if let Err(e) = self.fleece_setup(&spec, &mut fleece).await {
            let _ = self.fleece_teardown(&fleece, false).await;
            return Err(e);
        }
        Ok(fleece)
    }

    async fn fleece_setup(&self, spec: &VmSpec, f: &mut Fleece) -> Result<(), EngineError> {
        let vm = spec.name.as_str();
        for d in &f.disks {
            let _ = std::fs::remove_file(&d.fleece_file);
            // The temporary image only receives the blocks the guest overwrites meanwhile.
            self.qemu_img(
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    &d.fleece_file.display().to_string(),
                    &d.size.to_string(),
                ],
                "qemu-img create (fleece)",
            )?;
            super::layers::set_mode(&d.fleece_file, 0o600)?;
            self.give_to_qemu(&d.fleece_file)?;
            f.qmp
                .execute(
                    "blockdev-add",
                    Some(json!({
                        "driver": "qcow2",
                        "node-name": d.fleece_node,
                        "file": {"driver": "file", "filename": d.fleece_file.display().to_string()},
                        "backing": d.node,
                    })),
                )
                .await
                .map_err(qmp_err(vm))?;
        }
        let mut actions = vec![];
        for d in &f.disks {
            actions.push(json!({"type": "blockdev-backup", "data": {
                "job-id": d.job, "device": d.node, "target": d.fleece_node, "sync": "none",
            }}));
            if let Some(b) = &d.bitmap {
                actions.push(json!({"type": "block-dirty-bitmap-disable", "data": {"node": d.node, "name": b}}));
            }
            actions.push(json!({"type": "block-dirty-bitmap-add", "data": {
                "node": d.node, "name": d.new_bitmap, "persistent": true,
            }}));
        }
        f.qmp
            .execute("transaction", Some(json!({"actions": actions})))
            .await
            .map_err(qmp_err(vm))?;
        let _ = std::fs::remove_file(&f.socket);
        f.qmp
            .execute(
                "nbd-server-start",
                Some(json!({"addr": {"type": "unix", "data": {"path": f.socket.display().to_string()}}})),
            )
            .await
            .map_err(qmp_err(vm))?;
        for d in &f.disks {
            let mut args = json!({
                "type": "nbd", "id": format!("exp-{}", d.disk), "node-name": d.fleece_node,
                "name": d.export, "writable": false,
            });
            if let Some(b) = &d.bitmap {
                args["bitmaps"] = json!([b]);
            }
            f.qmp
                .execute("block-export-add", Some(args))
                .await
                .map_err(qmp_err(vm))?;
        }
        Ok(())
    }

    /// Ends an export. `success`: the backup that read it is stored, so the frozen bitmaps
    /// go and the new ones are the reference from now on; otherwise the frozen bitmaps take
    /// back everything the new ones recorded, and the new ones go.
    pub async fn fleece_close(&self, f: Fleece, success: bool) -> Result<(), EngineError> {
        self.fleece_teardown(&f, success).await
    }

    async fn fleece_teardown(&self, f: &Fleece, success: bool) -> Result<(), EngineError> {
        let vm = f.vm.as_str();
        let q = &f.qmp;
        let mut first_error = None;
        let note = |r: Result<Value, corral_qmp::QmpError>| {
            if let Err(e) = r {
                tracing::debug!(vm, "fleece teardown: {e}");
            }
        };
        for d in &f.disks {
            note(
                q.execute(
                    "block-export-del",
                    Some(json!({"id": format!("exp-{}", d.disk), "mode": "hard"})),
                )
                .await,
            );
        }
        note(q.execute("nbd-server-stop", None).await);
        for d in &f.disks {
            note(
                q.execute("block-job-cancel", Some(json!({"device": d.job, "force": true})))
                    .await,
            );
        }
        // The job must be gone before its target node can be deleted.
        for _ in 0..250 {
            let busy = q
                .query_jobs()
                .await
                .map(|jobs| jobs.iter().any(|j| f.disks.iter().any(|d| d.job == j.id)))
                .unwrap_or(false);
            if !busy {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for d in &f.disks {
            note(
                q.execute("blockdev-del", Some(json!({"node-name": d.fleece_node})))
                    .await,
            );
            let _ = std::fs::remove_file(&d.fleece_file);
            let present: Vec<String> = bitmaps_of(q, vm, &d.disk)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let has = |n: &str| present.iter().any(|p| p == n);
            let r = if success {
                match &d.bitmap {
                    Some(b) if has(b) => q
                        .execute("block-dirty-bitmap-remove", Some(json!({"node": d.node, "name": b})))
                        .await
                        .map(|_| ()),
                    _ => Ok(()),
                }
            } else {
                let mut r = Ok(());
                if let Some(b) = &d.bitmap {
                    if has(b) && has(&d.new_bitmap) {
                        let merge = json!({"actions": [
                            {"type": "block-dirty-bitmap-enable", "data": {"node": d.node, "name": b}},
                            {"type": "block-dirty-bitmap-merge", "data": {"node": d.node, "target": b, "bitmaps": [d.new_bitmap]}},
                            {"type": "block-dirty-bitmap-remove", "data": {"node": d.node, "name": d.new_bitmap}},
                        ]});
                        r = q.execute("transaction", Some(merge)).await.map(|_| ());
                    }
                } else if has(&d.new_bitmap) {
                    // A failed first backup: the next one reads in full anyway.
                    r = q
                        .execute(
                            "block-dirty-bitmap-remove",
                            Some(json!({"node": d.node, "name": d.new_bitmap})),
                        )
                        .await
                        .map(|_| ());
                }
                r
            };
            if let Err(e) = r {
                first_error.get_or_insert(EngineError::qmp(vm)(e));
            }
        }
        let _ = std::fs::remove_file(&f.socket);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
