//! `corral backup restore`: a backup back onto disks, as a new VM or over a stopped VM's
//! own disks.
//!
//! Every disk is written through a `qemu-storage-daemon` that serves the target image
//! writable over NBD, so the format (qcow2, raw) is QEMU's business and a qcow2 target is
//! written once, sparse: zero chunks are skipped on a new image and sent as WRITE_ZEROES
//! over an old one. The store decodes and hash-checks chunks on worker threads; a chunk
//! that fails its check is never written, and the restore fails naming it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_nbd::{ConnectOptions, NbdClient};
use corral_qmp::Qmp;
use corral_store::{Manifest, RestoredRun, Store};
use corral_types::{ByteSize, DiskFormat, RunState, TransferBytes, VmName, VmSpec};
use serde::Serialize;
use serde_json::json;

use super::backup::{manifest_spec, no_such_backup, store_err};
use super::jobs::Job;
use super::state::observe;
use super::Engine;
use crate::error::EngineError;
use crate::paths::VmPaths;

/// Data runs handed from the store's threads to the NBD writers.
const RUN_BYTES: usize = 4 << 20;
/// NBD connections writing at once.
const WRITERS: usize = 4;

/// What `corral backup restore` asks for.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub id: String,
    /// A new VM's name. Without it (and without `in_place`) the backup's VM name, which
    /// must then be free.
    pub as_name: Option<String>,
    /// Only these disks (default: every disk the backup stored). With `as_name`, the others
    /// come back empty at their recorded size.
    pub disks: Vec<String>,
    /// Overwrite the disks of the existing, stopped VM.
    pub in_place: bool,
}

/// One disk of a restore.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoredDisk {
    pub name: String,
    pub size: u64,
    /// `restored` (from the backup), `empty` (created empty: a skeleton's data disk, or
    /// not selected) or `untouched` (in place, not selected or not in the backup).
    pub how: String,
    /// Bytes of data written (zero stretches are not counted).
    pub written: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
}

/// What `corral backup restore` did.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreReport {
    pub backup: String,
    /// The VM restored into.
    pub vm: String,
    /// The VM the backup is of.
    pub source_vm: String,
    pub in_place: bool,
    pub disks: Vec<RestoredDisk>,
    pub millis: u64,
}

/// A `qemu-storage-daemon` serving one image writable over NBD.
struct WritableExport {
    child: tokio::process::Child,
    qmp: Qmp,
    sock: PathBuf,
}

impl Engine {
    /// Restores a backup: as a new VM (`as_name`, or the backup's VM name when that is free)
    /// or over the disks of the existing VM when it is stopped (`in_place`).
    pub async fn backup_restore(&self, req: &RestoreRequest) -> Result<RestoreReport, EngineError> {
        let started = Instant::now();
        let store = self.backup_store()?;
        let m = store.manifest(&req.id).map_err(|e| no_such_backup("restore", e))?;
        let spec = manifest_spec(&m)
            .ok_or_else(|| EngineError::op(&m.vm, "restore", "the backup's VM spec cannot be read"))?;
        for d in &req.disks {
            if m.disk(d).is_none() {
                let known: Vec<&str> = m.disks.iter().map(|e| e.info.name.as_str()).collect();
                return Err(EngineError::invalid(
                    &m.vm,
                    "restore",
                    format!("backup {} has no disk {d:?}; its disks: {}", m.id, known.join(", ")),
                ));
            }
        }
        let report = if req.in_place {
            if req.as_name.is_some() {
                return Err(EngineError::BadRequest(
                    "--in-place restores over the backup's own VM; it does not take --as".into(),
                ));
            }
            self.restore_in_place(&store, &m, req).await?
        } else {
            let name = req.as_name.clone().unwrap_or_else(|| m.vm.clone());
            if req.as_name.is_none() && self.reg().get(&name)?.is_some() {
                return Err(EngineError::invalid(
                    &name,
                    "restore",
                    format!(
                        "VM {name} exists; restore as a new VM with --as NAME, or over its disks with --in-place \
                         (it must be stopped)"
                    ),
                ));
            }
            self.restore_as_new(&store, &m, spec, &name, &req.disks).await?
        };
        Ok(RestoreReport {
            millis: started.elapsed().as_millis() as u64,
            ..report
        })
    }

    async fn restore_as_new(
        &self,
        store: &Store,
        m: &Manifest,
        mut spec: VmSpec,
        name: &str,
        only: &[String],
    ) -> Result<RestoreReport, EngineError> {
        let new = VmName::new(name)?;
        if self.reg().get(new.as_str())?.is_some() {
            return Err(EngineError::Exists(new.to_string()));
        }
        let _lock = self.lock(&new, "restore")?;
        let paths = self.paths(&new);
        if paths.data.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(EngineError::invalid(
                name,
                "restore",
                format!(
                    "{} already holds files; move them away or pick another name",
                    paths.data.display()
                ),
            ));
        }
        crate::paths::ensure_dir(&paths.data, 0o700).map_err(EngineError::io(&paths.data))?;
        spec.name = new.clone();
        spec.uuid = None;
        spec.network.mac = None;
        spec.network.forwards.clear();
        spec.display.vnc_port = None;
        spec.autostart = false;
        let total = restore_total(m, only);
        let job = self.job_begin(name, "restore", &format!("{} → {name}", m.id))?;
        let mut created: Vec<PathBuf> = vec![];
        let mut disks = vec![];
        let result = async {
            let mut done = 0u64;
            for entry in &m.disks {
                let Some(d) = spec.disks.iter_mut().find(|d| d.name == entry.info.name) else {
                    continue;
                };
                let target = paths.disk(&d.name);
                created.push(target.clone());
                let size = ByteSize(entry.info.size);
                super::define::create_qcow2(&self.cfg.qemu.img_binary, &target, size)?;
                let wanted = entry.stored && (only.is_empty() || only.contains(&d.name));
                let written = if wanted {
                    let w = self
                        .write_disk(
                            &m.id,
                            name,
                            &paths,
                            store,
                            &d.name,
                            &target,
                            DiskFormat::Qcow2,
                            false,
                            &job,
                            done,
                            total,
                        )
                        .await?;
                    done += entry.info.size;
                    w
                } else {
                    0
                };
                d.path = Some(target.clone());
                d.format = DiskFormat::Qcow2;
                d.size = Some(size);
                disks.push(RestoredDisk {
                    name: d.name.clone(),
                    size: entry.info.size,
                    how: if wanted { "restored" } else { "empty" }.into(),
                    written,
                    path: target,
                });
            }
            self.normalize(&mut spec, super::define::Given::All);
            self.reg().insert(&spec)
        }
        .await;
        job.finish(&result, Some(format!("restored {} as {name}", m.id)));
        if let Err(e) = result {
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            let _ = std::fs::remove_file(paths.qemu_log());
            let _ = std::fs::remove_dir(&paths.data);
            let _ = std::fs::remove_dir_all(&paths.run);
            return Err(e);
        }
        Ok(RestoreReport {
            backup: m.id.clone(),
            vm: name.to_string(),
            source_vm: m.vm.clone(),
            in_place: false,
            disks,
            millis: 0,
        })
    }

    async fn restore_in_place(
        &self,
        store: &Store,
        m: &Manifest,
        req: &RestoreRequest,
    ) -> Result<RestoreReport, EngineError> {
        let (_lock, rec) = self.lock_and_get(&m.vm, "restore")?;
        let spec = rec.spec;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        if o.state != RunState::Stopped || o.pid.is_some() {
            let hint = match o.state {
                RunState::Saved => format!(
                    "its saved memory belongs to the disks as they are; start it and stop it (`corral vm start {0}`, \
                     `corral vm stop {0}`), or restore with --as NEW",
                    spec.name
                ),
                _ => format!(
                    "an in-place restore needs it stopped: `corral vm stop {0}`, or restore with --as NEW",
                    spec.name
                ),
            };
            return Err(EngineError::WrongState {
                name: spec.name.to_string(),
                state: o.state,
                hint,
            });
        }
        // Which disks: the backup must have stored them, the VM must still have them at the
        // same size (a disk resized since would need its size back first).
        let mut plan = vec![];
        for entry in m.disks.iter().filter(|e| e.stored) {
            if !req.disks.is_empty() && !req.disks.contains(&entry.info.name) {
                continue;
            }
            let d = spec.disks.iter().find(|d| d.name == entry.info.name).ok_or_else(|| {
                EngineError::invalid(
                    &m.vm,
                    "restore",
                    format!(
                        "the VM has no disk {:?} any more; restore the backup with --as NEW instead",
                        entry.info.name
                    ),
                )
            })?;
            let path = super::layers::disk_path(d, &paths);
            let size = self.img_info(&path)?.virtual_size;
            if size != entry.info.size {
                return Err(EngineError::invalid(
                    &m.vm,
                    "restore",
                    format!(
                        "disk {} is {} now, the backup's is {}; resize it back (`corral disk resize {} {} {}`) or \
                         restore with --as NEW",
                        d.name,
                        ByteSize(size).approx(),
                        ByteSize(entry.info.size).approx(),
                        m.vm,
                        d.name,
                        entry.info.size
                    ),
                ));
            }
            plan.push((d.name.clone(), path, d.format, entry.info.size));
        }
        for d in &req.disks {
            if !plan.iter().any(|p| &p.0 == d) {
                return Err(EngineError::invalid(
                    &m.vm,
                    "restore",
                    format!(
                        "backup {} did not store disk {d:?} (a skeleton backup keeps only system disks)",
                        m.id
                    ),
                ));
            }
        }
        if plan.is_empty() {
            return Err(EngineError::invalid(
                &m.vm,
                "restore",
                "the backup stored none of these disks",
            ));
        }
        // Nothing is overwritten unless every chunk it needs is sound: a damaged store must
        // not leave the VM with half a disk.
        let check = store.verify(std::slice::from_ref(&m.id)).map_err(store_err)?;
        if !check.problems.is_empty() || !check.broken.is_empty() {
            return Err(EngineError::op(
                &m.vm,
                "restore",
                format!(
                    "backup {} is damaged ({} bad chunk(s)); nothing was written. `corral backup verify {}` lists them",
                    m.id,
                    check.problems.len() + check.broken.len(),
                    m.id
                ),
            ));
        }
        let total: u64 = plan.iter().map(|p| p.3).sum();
        let job = self.job_begin(&m.vm, "restore", &format!("{} → {} (in place)", m.id, m.vm))?;
        let mut disks = vec![];
        let result = async {
            let mut done = 0;
            for (name, path, format, size) in &plan {
                let written = self
                    .write_disk(
                        &m.id, &m.vm, &paths, store, name, path, *format, true, &job, done, total,
                    )
                    .await?;
                done += size;
                disks.push(RestoredDisk {
                    name: name.clone(),
                    size: *size,
                    how: "restored".into(),
                    written,
                    path: path.clone(),
                });
            }
            Ok::<(), EngineError>(())
        }
        .await;
        job.finish(&result, Some(format!("restored {} over {}", m.id, m.vm)));
        result?;
        for d in &spec.disks {
            if !disks.iter().any(|r| r.name == d.name) {
                disks.push(RestoredDisk {
                    name: d.name.clone(),
                    size: d.size.map(|s| s.0).unwrap_or(0),
                    how: "untouched".into(),
                    written: 0,
                    path: super::layers::disk_path(d, &paths),
                });
            }
        }
        Ok(RestoreReport {
            backup: m.id.clone(),
            vm: m.vm.clone(),
            source_vm: m.vm.clone(),
            in_place: true,
            disks,
            millis: 0,
        })
    }

    /// Writes one stored disk of backup `id` into `target` through a writable NBD export.
    /// `overwrite`: the image holds old data, so zero stretches are written as zeros too.
    #[allow(clippy::too_many_arguments)]
    async fn write_disk(
        &self,
        id: &str,
        vm: &str,
        paths: &VmPaths,
        store: &Store,
        disk: &str,
        target: &Path,
        format: DiskFormat,
        overwrite: bool,
        job: &Job<'_>,
        done_before: u64,
        total: u64,
    ) -> Result<u64, EngineError> {
        let reader = store.read_disk(id, disk).map_err(store_err)?;
        let size = reader.index().disk_size;
        let mut export = self.writable_export(vm, paths, target, format).await?;
        let result = async {
            let opts = ConnectOptions::new("target").timeout(Some(Duration::from_secs(120)));
            let connect_err = |e: corral_nbd::NbdError| {
                EngineError::op(vm, "restore", format!("connecting to the image's export: {e}"))
            };
            // This one checks the size and flushes at the end; the writers get their own.
            let first = NbdClient::connect_unix(&export.sock, &opts)
                .await
                .map_err(connect_err)?;
            if first.size() != size {
                return Err(EngineError::op(
                    vm,
                    "restore",
                    format!(
                        "{} is {} bytes, the backup's disk {size}",
                        target.display(),
                        first.size()
                    ),
                ));
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<RestoredRun>(WRITERS * 2);
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 4);
            let producer = tokio::task::spawn_blocking(move || {
                reader.restore_runs(threads, RUN_BYTES, |run| tx.blocking_send(run).is_ok())
            });
            // Several connections, each one request at a time: QEMU writes them in parallel.
            let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
            let (prog_tx, mut prog_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
            let mut writers = tokio::task::JoinSet::new();
            for _ in 0..WRITERS {
                let mut nbd = NbdClient::connect_unix(&export.sock, &opts)
                    .await
                    .map_err(connect_err)?;
                let (rx, prog) = (rx.clone(), prog_tx.clone());
                writers.spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(run) = next else { break };
                        let res = match (run.is_zero(), overwrite) {
                            (false, _) => nbd.write(run.offset, &run.data).await,
                            (true, true) => nbd.write_zeroes(run.offset, run.len).await,
                            (true, false) => Ok(()),
                        };
                        if let Err(e) = res {
                            // Closing the queue stops the store's threads too.
                            rx.lock().await.close();
                            return Err(e);
                        }
                        let _ = prog.send((run.len, run.is_zero()));
                    }
                    Ok(nbd)
                });
            }
            drop(prog_tx);
            let (mut written, mut walked) = (0u64, 0u64);
            while let Some((len, zero)) = prog_rx.recv().await {
                walked += len;
                if !zero {
                    written += len;
                }
                job.progress_bytes(
                    done_before + walked,
                    total,
                    TransferBytes {
                        read: written,
                        ..Default::default()
                    },
                );
            }
            let mut write_err = None;
            let mut clients = vec![first];
            while let Some(joined) = writers.join_next().await {
                match joined {
                    Ok(Ok(c)) => clients.push(c),
                    Ok(Err(e)) => {
                        write_err.get_or_insert_with(|| EngineError::op(vm, "restore", format!("writing {disk}: {e}")));
                    }
                    Err(e) => {
                        write_err
                            .get_or_insert_with(|| EngineError::op(vm, "restore", format!("a writer failed: {e}")));
                    }
                }
            }
            let produced = producer
                .await
                .map_err(|e| EngineError::op(vm, "restore", format!("the reader task failed: {e}")))?;
            // A bad chunk first: it is the reason the writers stopped, if they did.
            produced.map_err(store_err)?;
            if let Some(e) = write_err {
                return Err(e);
            }
            // All writers share one image in QEMU: one flush covers every connection's writes.
            clients[0]
                .flush()
                .await
                .map_err(|e| EngineError::op(vm, "restore", format!("flushing {disk}: {e}")))?;
            for c in clients {
                let _ = c.close().await;
            }
            Ok(written)
        }
        .await;
        let quit = export.quit(vm).await;
        let written = result?;
        quit?;
        Ok(written)
    }

    /// Starts a `qemu-storage-daemon` that serves `image` writable on an NBD socket in the
    /// VM's run directory.
    async fn writable_export(
        &self,
        vm: &str,
        paths: &VmPaths,
        image: &Path,
        format: DiskFormat,
    ) -> Result<WritableExport, EngineError> {
        let sock = paths.run.join("restore.sock");
        let _ = std::fs::remove_file(&sock);
        let blockdev = json!({
            "driver": format.as_str(),
            "node-name": "target",
            "file": {"driver": "file", "filename": image.display().to_string()},
        });
        let what = image.display().to_string();
        let (qmp, mut child) = self
            .spawn_storage_daemon(vm, paths, "restore-qsd.sock", &[blockdev], "restore", &what)
            .await?;
        let qmp_err = |e: corral_qmp::QmpError| EngineError::op(vm, "restore", format!("exporting the image: {e}"));
        let setup = async {
            qmp.execute(
                "nbd-server-start",
                Some(json!({"addr": {"type": "unix", "data": {"path": sock.display().to_string()}}})),
            )
            .await
            .map_err(qmp_err)?;
            qmp.execute(
                "block-export-add",
                Some(
                    json!({"type": "nbd", "id": "restore", "node-name": "target", "name": "target", "writable": true}),
                ),
            )
            .await
            .map_err(qmp_err)
        }
        .await;
        if let Err(e) = setup {
            let _ = child.kill().await;
            return Err(e);
        }
        Ok(WritableExport { child, qmp, sock })
    }
}

impl WritableExport {
    /// Closes the image cleanly (`quit` flushes qcow2 metadata) and waits for the daemon.
    async fn quit(&mut self, vm: &str) -> Result<(), EngineError> {
        let _ = self.qmp.execute("quit", None).await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {
                let _ = std::fs::remove_file(&self.sock);
                Ok(())
            }
            Ok(Ok(status)) => Err(EngineError::op(
                vm,
                "restore",
                format!("qemu-storage-daemon ended with {status} while closing the restored image"),
            )),
            _ => {
                let _ = self.child.kill().await;
                Err(EngineError::Timeout {
                    what: "qemu-storage-daemon closing the restored image".into(),
                    seconds: 30,
                })
            }
        }
    }
}

/// Bytes a restore walks: the stored, selected disks' sizes.
fn restore_total(m: &Manifest, only: &[String]) -> u64 {
    m.disks
        .iter()
        .filter(|e| e.stored && (only.is_empty() || only.contains(&e.info.name)))
        .map(|e| e.info.size)
        .sum()
}

/// What `corral backup drill` found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup: String,
    pub vm: String,
    pub passed: bool,
    /// `guest-agent ping` or `console line "…"`.
    pub sign: String,
    /// Milliseconds from start to the sign of life (or to giving up).
    pub millis: u64,
    /// The last console lines when it failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_console: Vec<String>,
}

impl Engine {
    /// Restores a backup into a temporary VM without network, boots it, waits for a sign of
    /// life (the guest agent's ping, or `expect_line` on the serial console), then removes
    /// the temporary VM whatever happened.
    pub async fn backup_drill(
        &self,
        id: &str,
        expect_line: Option<&str>,
        timeout: Duration,
    ) -> Result<DrillReport, EngineError> {
        let m = self
            .backup_store()?
            .manifest(id)
            .map_err(|e| no_such_backup("drill", e))?;
        let spec =
            manifest_spec(&m).ok_or_else(|| EngineError::op(&m.vm, "drill", "the backup's spec cannot be read"))?;
        if expect_line.is_none() && !spec.guest_agent {
            return Err(EngineError::invalid(
                &m.vm,
                "drill",
                "the VM has no guest agent to ping; give --expect-line TEXT that its console prints once it is up",
            ));
        }
        let short: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).rev().take(8).collect();
        let temp = format!("drill-{short}");
        self.backup_restore(&RestoreRequest {
            id: id.to_string(),
            as_name: Some(temp.clone()),
            ..Default::default()
        })
        .await?;
        let result = self.drill_boot(&temp, expect_line, timeout).await;
        // Always clean up: kill whatever runs, then delete the VM and its disks.
        let _ = self.kill(&temp).await;
        let deleted = self.delete(&temp, false).await;
        let (passed, sign, millis, last_console) = result?;
        deleted?;
        Ok(DrillReport {
            backup: id.to_string(),
            vm: m.vm.clone(),
            passed,
            sign,
            millis,
            last_console,
        })
    }

    async fn drill_boot(
        &self,
        name: &str,
        expect_line: Option<&str>,
        timeout: Duration,
    ) -> Result<(bool, String, u64, Vec<String>), EngineError> {
        // No network: a drill must never appear on the LAN next to the real VM.
        let mut rec = self.get(name)?;
        rec.spec.network.mode = corral_types::NetworkMode::None;
        rec.spec.network.mac = None;
        rec.spec.display.mode = corral_types::DisplayMode::None;
        self.reg().update(&rec.spec, rec.generation)?;
        let started = std::time::Instant::now();
        self.start(name).await?;
        let paths = self.paths(&rec.spec.name);
        let sign = match expect_line {
            Some(l) => format!("console line {l:?}"),
            None => "guest-agent ping".to_string(),
        };
        while started.elapsed() < timeout {
            let alive = match expect_line {
                Some(line) => std::fs::read_to_string(paths.console_log())
                    .map(|t| t.lines().any(|x| x.contains(line)))
                    .unwrap_or(false),
                None => match super::agent::GuestAgent::connect(&paths.qga_sock(), Duration::from_secs(1)).await {
                    Ok(mut a) => a.ping(Duration::from_secs(2)).await.is_ok(),
                    Err(_) => false,
                },
            };
            if alive {
                return Ok((true, sign, started.elapsed().as_millis() as u64, vec![]));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let last = crate::process::tail_lines(&paths.console_log(), 5);
        Ok((false, sign, started.elapsed().as_millis() as u64, last))
    }
}
