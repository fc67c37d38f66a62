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
use corral_types::{RunState, VmSpec};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

use super::agent::{AgentError, GuestAgent};
use super::layers::top_node;
use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::lock::VmLock;

/// What to export for one disk.
#[derive(Debug, Clone, Default)]
pub struct FleeceRequest {
    pub disk: String,
    /// The persistent bitmap that tracked changes since the last backup; `None` for a full read.
    pub since_bitmap: Option<String>,
    /// The persistent bitmap to start now, for the next backup.
    pub new_bitmap: String,
    /// Start `new_bitmap` at all (a skeleton backup does not begin a new chain).
    pub no_tracking: bool,
    /// After success, remove every other bitmap whose name starts with this (older chains
    /// that a full backup replaced).
    pub retire_prefix: Option<String>,
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
    #[serde(skip)]
    track: bool,
    #[serde(skip)]
    retire_prefix: Option<String>,
}

/// A live point-in-time export. Hold it while reading, then [`Engine::fleece_close`] it.
pub struct Fleece {
    pub vm: String,
    /// Unix socket of the NBD server (`nbd+unix:///EXPORT?socket=PATH`).
    pub socket: PathBuf,
    pub disks: Vec<FleeceDisk>,
    /// Filesystems the guest agent froze around the switch (`None`: no agent answered, so
    /// the point in time is crash-consistent).
    pub frozen: Option<u64>,
    qmp: Qmp,
    /// For a stopped VM: the qemu-storage-daemon that holds its disks.
    daemon: Option<tokio::process::Child>,
    _lock: VmLock,
}

/// The named dirty bitmaps on a node: (name, recording, inconsistent). Looked up by node,
/// not by device: while a backup job runs, a filter node sits above the disk's node.
pub(crate) async fn node_bitmaps(qmp: &Qmp, vm: &str, node: &str) -> Result<Vec<(String, bool, bool)>, EngineError> {
    let nodes: Value = qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .map_err(EngineError::qmp(vm))?;
    Ok(nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["node-name"] == node)
        .flat_map(|n| n["dirty-bitmaps"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                m["recording"].as_bool().unwrap_or(false),
                m["inconsistent"].as_bool().unwrap_or(false),
            ))
        })
        .collect())
}

/// A corral killed in the middle of a live backup leaves its export in the VM's QEMU: the
/// NBD server and exports, the copy-before-write job (whose filter node hides the disk's own
/// node, and with it the bitmaps) and the temporary fleece node. Nobody uses them: the
/// caller holds the VM lock. Removes them, so the next backup starts from a clean graph; the
/// frozen bitmap is dealt with per disk (`reclaim_frozen_bitmap`).
async fn clear_leftover_export(qmp: &Qmp, vm: &str, paths: &crate::paths::VmPaths) -> Result<(), EngineError> {
    let ids = |v: Value, key: &str, prefix: &str| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x[key].as_str())
            .filter(|id| id.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let exports = ids(
        qmp.execute("query-block-exports", None)
            .await
            .map_err(EngineError::qmp(vm))?,
        "id",
        "exp-",
    );
    let jobs: Vec<String> = qmp
        .query_jobs()
        .await
        .map_err(EngineError::qmp(vm))?
        .into_iter()
        .map(|j| j.id)
        .filter(|id| id.starts_with("fleece-"))
        .collect();
    let nodes = ids(
        qmp.execute("query-named-block-nodes", Some(json!({"flat": true})))
            .await
            .map_err(EngineError::qmp(vm))?,
        "node-name",
        "fl-",
    );
    let socket = paths.run.join("nbd.sock");
    if exports.is_empty() && jobs.is_empty() && nodes.is_empty() && !socket.exists() {
        return Ok(());
    }
    tracing::warn!(
        vm,
        ?exports,
        ?jobs,
        ?nodes,
        "removing the export an interrupted backup left in QEMU"
    );
    for id in &exports {
        let _ = qmp
            .execute("block-export-del", Some(json!({"id": id, "mode": "hard"})))
            .await;
    }
    let _ = qmp.execute("nbd-server-stop", None).await;
    for id in &jobs {
        let _ = qmp
            .execute("block-job-cancel", Some(json!({"device": id, "force": true})))
            .await;
    }
    for _ in 0..250 {
        let left = qmp
            .query_jobs()
            .await
            .map_err(EngineError::qmp(vm))?
            .iter()
            .any(|j| jobs.contains(&j.id));
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An export deleted in hard mode may let go of its node a moment later.
    for n in &nodes {
        for attempt in 0..50 {
            match qmp.execute("blockdev-del", Some(json!({"node-name": n}))).await {
                Ok(_) => break,
                Err(e) if attempt == 49 => {
                    return Err(EngineError::op(
                        vm,
                        "backup",
                        format!("cannot remove node {n} an interrupted backup left in QEMU: {e}"),
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&paths.run) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("fleece-") && n.ends_with(".qcow2") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The bitmap an incremental reads is frozen (disabled) only from a backup's switch to its
/// end, when it is dropped (success) or takes back what the new one recorded (failure).
/// Found frozen, it belongs to a backup that never ended: its corral was killed, or the VM
/// stopped under it, so the changes made since the switch are only in the bitmap that backup
/// started. Merges every other `corral-` bitmap of the node into the frozen one and enables it
/// again (merging more than needed only makes the incremental read more; never wrong).
/// Returns why the bitmap cannot be used when no consistent bitmap recorded those changes.
async fn reclaim_frozen_bitmap(
    qmp: &Qmp,
    vm: &str,
    node: &str,
    frozen: &str,
    found: &[(String, bool, bool)],
) -> Result<Option<&'static str>, EngineError> {
    let others: Vec<&(String, bool, bool)> = found
        .iter()
        .filter(|(n, _, _)| n != frozen && n.starts_with("corral-"))
        .collect();
    if others.iter().any(|(_, _, inconsistent)| *inconsistent) {
        return Ok(Some(
            "QEMU marked the dirty bitmap of an interrupted backup inconsistent (changes may be missing) after",
        ));
    }
    if !others.iter().any(|(_, recording, _)| *recording) {
        return Ok(Some(
            "no dirty bitmap recorded the changes since an interrupted backup froze",
        ));
    }
    let names: Vec<&str> = others.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut actions = vec![
        json!({"type": "block-dirty-bitmap-enable", "data": {"node": node, "name": frozen}}),
        json!({"type": "block-dirty-bitmap-merge", "data": {"node": node, "target": frozen, "bitmaps": names}}),
    ];
    for n in &names {
        actions.push(json!({"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": n}}));
    }
    qmp.execute("transaction", Some(json!({"actions": actions})))
        .await
        .map_err(EngineError::qmp(vm))?;
    tracing::warn!(
        vm,
        node,
        bitmap = frozen,
        merged = ?names,
        "took back the changes an interrupted backup's bitmap recorded"
    );
    Ok(None)
}

impl Engine {
    /// Starts a point-in-time export of a VM's disks. A running (or paused) VM exports from
    /// its own QEMU (fleecing); a stopped (or saved) one from a `qemu-storage-daemon` that
    /// opens its disks, so both are read the same way. Holds the VM's lock until closed.
    pub async fn fleece_open(&self, name: &str, requests: &[FleeceRequest]) -> Result<Fleece, EngineError> {
        let (lock, rec) = self.lock_and_get(name, "backup")?;
        let spec = rec.spec;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        let live = o.state.is_active();
        if o.state == RunState::Crashed {
            return Err(EngineError::WrongState {
                name: name.to_string(),
                state: o.state,
                hint: format!(
                    "its disks were not closed cleanly; start it once (`corral vm start {name}`) or clear the crash with `corral vm kill {name}` first"
                ),
            });
        }
        let (qmp, daemon) = if live {
            let qmp = self.monitor(&spec, &paths).await?;
            clear_leftover_export(&qmp, name, &paths).await?;
            (qmp, None)
        } else {
            let (q, child) = self.storage_daemon(&spec, &paths).await?;
            (q, Some(child))
        };
        let mut disks = vec![];
        for r in requests {
            super::diskmgmt::find_disk(&spec, &r.disk)?;
            let node = if live {
                top_node(&qmp, name, &r.disk).await?
            } else {
                format!("drive-{}", r.disk)
            };
            if let Some(b) = &r.since_bitmap {
                let found = node_bitmaps(&qmp, name, &node).await?;
                let why = match found.iter().find(|(n, _, _)| n == b) {
                    None => Some("it has no dirty bitmap"),
                    // QEMU was killed while the bitmap was in use: it may miss changes.
                    Some((_, _, true)) => {
                        Some("QEMU marked the dirty bitmap inconsistent (it was not closed cleanly) for")
                    }
                    // Frozen by a backup that never ended.
                    Some((_, false, _)) => reclaim_frozen_bitmap(&qmp, name, &node, b, &found).await?,
                    Some(_) => None,
                };
                if let Some(why) = why {
                    if let Some(mut d) = daemon {
                        // `quit`, not a kill: a killed daemon leaves the bitmaps marked in use.
                        let _ = qmp.execute("quit", None).await;
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), d.wait()).await;
                    }
                    return Err(EngineError::invalid(
                        name,
                        "backup",
                        format!("disk {}: {why} {b:?}; read it in full", r.disk),
                    ));
                }
            }
            let info: Value = qmp
                .execute("query-named-block-nodes", Some(json!({"flat": true})))
                .await
                .map_err(EngineError::qmp(name))?;
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
                node: node.clone(),
                fleece_node: if live { format!("fl-{tag}") } else { node.clone() },
                fleece_file: paths.run.join(format!("fleece-{}.qcow2", r.disk)),
                job: if live { format!("fleece-{tag}") } else { String::new() },
                new_bitmap: r.new_bitmap.clone(),
                track: !r.no_tracking,
                retire_prefix: r.retire_prefix.clone(),
            });
        }
        let socket = paths.run.join("nbd.sock");
        let mut fleece = Fleece {
            vm: name.to_string(),
            socket,
            disks,
            qmp,
            daemon,
            frozen: None,
            _lock: lock,
        };
        if let Err(e) = self.fleece_setup(&spec, &mut fleece).await {
            let _ = self.fleece_teardown(&fleece, false).await;
            let _ = self.stop_daemon(&mut fleece).await;
            return Err(e);
        }
        Ok(fleece)
    }

    async fn fleece_setup(&self, spec: &VmSpec, f: &mut Fleece) -> Result<(), EngineError> {
        let vm = spec.name.as_str();
        let live = f.daemon.is_none();
        for d in f.disks.iter().filter(|_| live) {
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
                .map_err(EngineError::qmp(vm))?;
        }
        let mut actions = vec![];
        for d in &f.disks {
            if live {
                actions.push(json!({"type": "blockdev-backup", "data": {
                    "job-id": d.job, "device": d.node, "target": d.fleece_node, "sync": "none",
                }}));
            }
            if let Some(b) = &d.bitmap {
                actions.push(json!({"type": "block-dirty-bitmap-disable", "data": {"node": d.node, "name": b}}));
            }
            if d.track {
                actions.push(json!({"type": "block-dirty-bitmap-add", "data": {
                    "node": d.node, "name": d.new_bitmap, "persistent": true,
                }}));
            }
        }
        // The switch. With a guest agent, the guest's filesystems are frozen around it (and
        // thawed on every path, the failed transaction included).
        let mut agent = None;
        if live && spec.guest_agent {
            let sock = self.paths(&spec.name).qga_sock();
            match GuestAgent::connect(&sock, Duration::from_secs(2)).await {
                Ok(mut a) => match a.freeze(Duration::from_secs(30)).await {
                    Ok(n) => {
                        f.frozen = Some(n);
                        agent = Some(a);
                    }
                    Err(e) => {
                        tracing::warn!(
                            vm,
                            "guest agent could not freeze filesystems ({e}); crash-consistent backup"
                        );
                        let _ = a.thaw(Duration::from_secs(10)).await;
                    }
                },
                Err(e) => tracing::info!(vm, "no guest agent ({e}); crash-consistent backup"),
            }
        }
        let switched = f
            .qmp
            .execute("transaction", Some(json!({"actions": actions})))
            .await
            .map_err(EngineError::qmp(vm));
        if let Some(mut a) = agent {
            let mut thawed = Err(AgentError::Unreachable("not tried".into()));
            for _ in 0..3 {
                thawed = a.thaw(Duration::from_secs(10)).await;
                if thawed.is_ok() {
                    break;
                }
            }
            if let Err(e) = thawed {
                return Err(EngineError::op(
                    vm,
                    "backup",
                    format!("the guest agent did not thaw the guest's filesystems ({e}); they may still be frozen: run guest-fsfreeze-thaw in the guest"),
                ));
            }
        }
        switched?;
        let _ = std::fs::remove_file(&f.socket);
        f.qmp
            .execute(
                "nbd-server-start",
                Some(json!({"addr": {"type": "unix", "data": {"path": f.socket.display().to_string()}}})),
            )
            .await
            .map_err(EngineError::qmp(vm))?;
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
                .map_err(EngineError::qmp(vm))?;
        }
        Ok(())
    }

    /// Ends an export. `success`: the backup that read it is stored, so the frozen bitmaps
    /// go and the new ones are the reference from now on; otherwise the frozen bitmaps take
    /// back everything the new ones recorded, and the new ones go.
    pub async fn fleece_close(&self, mut f: Fleece, success: bool) -> Result<(), EngineError> {
        let r = self.fleece_teardown(&f, success).await;
        let quit = self.stop_daemon(&mut f).await;
        r.and(quit)
    }

    /// Ends the storage daemon of a stopped VM's export with `quit`, so that it writes the
    /// persistent bitmaps back into the images (a killed daemon would leave them
    /// inconsistent).
    async fn stop_daemon(&self, f: &mut Fleece) -> Result<(), EngineError> {
        let Some(child) = f.daemon.as_mut() else { return Ok(()) };
        let _ = f.qmp.execute("quit", None).await;
        match tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(other) => Err(EngineError::op(
                &f.vm,
                "backup",
                format!("qemu-storage-daemon ended badly: {other:?}"),
            )),
            Err(_) => {
                let _ = child.kill().await;
                Err(EngineError::Timeout {
                    what: format!("qemu-storage-daemon of {} to quit", f.vm),
                    seconds: 20,
                })
            }
        }
    }

    /// Opens a stopped VM's disks in a `qemu-storage-daemon` and connects to its monitor.
    async fn storage_daemon(
        &self,
        spec: &VmSpec,
        paths: &crate::paths::VmPaths,
    ) -> Result<(Qmp, tokio::process::Child), EngineError> {
        let blockdevs: Vec<Value> = spec
            .disks
            .iter()
            .map(|d| {
                json!({
                    "driver": d.format.as_str(),
                    "node-name": format!("drive-{}", d.name),
                    "file": {"driver": "file", "filename": super::layers::disk_path(d, paths).display().to_string()},
                })
            })
            .collect();
        self.spawn_storage_daemon(spec.name.as_str(), paths, "qsd.sock", &blockdevs, "backup", "the disks")
            .await
    }

    /// Starts a `qemu-storage-daemon` with `blockdevs` open and its QMP monitor on
    /// `run/<monitor>`, logging to the VM's `qemu.log`; waits until the monitor answers.
    /// Backups and restores both open images this way. `what` names the images in errors.
    pub(crate) async fn spawn_storage_daemon(
        &self,
        vm: &str,
        paths: &crate::paths::VmPaths,
        monitor: &str,
        blockdevs: &[Value],
        op: &str,
        what: &str,
    ) -> Result<(Qmp, tokio::process::Child), EngineError> {
        let bin = crate::process::find_binary(&self.cfg.qemu.storage_daemon).map_err(|_| EngineError::QemuMissing {
            binary: self.cfg.qemu.storage_daemon.clone(),
            where_: " in $PATH".into(),
        })?;
        crate::paths::ensure_dir(&paths.run, 0o700).map_err(EngineError::io(&paths.run))?;
        // A VM whose disks live elsewhere and that never ran has no data dir yet (the log goes there).
        crate::paths::ensure_dir(&paths.data, 0o700).map_err(EngineError::io(&paths.data))?;
        let mon = paths.run.join(monitor);
        let _ = std::fs::remove_file(&mon);
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--chardev")
            .arg(format!("socket,id=mon,path={},server=on,wait=off", mon.display()))
            .arg("--monitor")
            .arg("chardev=mon");
        for b in blockdevs {
            cmd.arg("--blockdev").arg(b.to_string());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.qemu_log())
            .map_err(EngineError::io(paths.qemu_log()))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(EngineError::io(paths.qemu_log()))?)
            .stderr(log)
            .kill_on_drop(true);
        // A corral killed during a backup (SIGKILL, the OOM killer, Ctrl-C) must not leave the
        // daemon behind: nobody would end it, and holding the images' locks it would keep the
        // VM from starting and from being backed up again. The kernel sends it SIGTERM when
        // corral goes, which qemu-storage-daemon handles like `quit`: it closes the images
        // cleanly, persistent bitmaps included (the next backup takes their changes back, see
        // `reclaim_frozen_bitmap`). The signal follows the thread that spawned the daemon: a
        // runtime thread, alive as long as the runtime.
        let parent = nix::unistd::getpid();
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid() are async-signal-safe and touch no
        // memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)?;
                // corral died before the line above took effect: do not start orphaned.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("corral exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(EngineError::io(&self.cfg.qemu.storage_daemon))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let last = crate::process::tail_lines(&paths.qemu_log(), 1).join(" ");
                return Err(EngineError::op(
                    vm,
                    op,
                    format!("qemu-storage-daemon could not open {what} ({status}): {last}"),
                ));
            }
            if let Ok(q) = Qmp::connect(&mon).await {
                return Ok((q, child));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(EngineError::Timeout {
                    what: format!("qemu-storage-daemon of {vm} opening {what}"),
                    seconds: 10,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
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
        let live = f.daemon.is_none();
        for d in f.disks.iter().filter(|_| live) {
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
            if live {
                note(
                    q.execute("blockdev-del", Some(json!({"node-name": d.fleece_node})))
                        .await,
                );
                let _ = std::fs::remove_file(&d.fleece_file);
            }
            let present: Vec<String> = node_bitmaps(q, vm, &d.node)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _, _)| n)
                .collect();
            let has = |n: &str| present.iter().any(|p| p == n);
            let r = if success {
                let mut gone: Vec<&str> = d.bitmap.iter().map(String::as_str).collect();
                if let (true, Some(p)) = (d.track, &d.retire_prefix) {
                    gone.extend(
                        present
                            .iter()
                            .filter(|n| n.starts_with(p.as_str()) && **n != d.new_bitmap)
                            .map(String::as_str),
                    );
                }
                gone.sort();
                gone.dedup();
                let mut r = Ok(());
                for b in gone.into_iter().filter(|b| has(b)) {
                    if let Err(e) = q
                        .execute("block-dirty-bitmap-remove", Some(json!({"node": d.node, "name": b})))
                        .await
                    {
                        r = Err(e);
                    }
                }
                r
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
