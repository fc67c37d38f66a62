//! `corral backup run` and `list`: the glue from the point-in-time export (`fleece.rs`)
//! through our NBD client (`corral-nbd`) into the store (`corral-store`).
//!
//! Each disk keeps one persistent dirty bitmap named after the backup it belongs to
//! (`corral-<backup id>`). An incremental reads only the chunks that bitmap marks and takes
//! the rest from the parent backup; when the bitmap is missing, inconsistent (QEMU was
//! killed) or the parent does not match, the backup reads everything instead (still storing
//! only new chunks), so an incremental is never wrong.

use std::path::PathBuf;
use std::time::Duration;

use corral_nbd::{ConnectOptions, NbdClient};
pub use corral_store::PrunePolicy;
use corral_store::{BackupKind, BeginOptions, DiskInfo, FinishOptions, Manifest, Store, StoreConfig};
use corral_types::{DiskRole, VmSpec};
use serde::Serialize;

use super::fleece::FleeceRequest;
use super::Engine;
use crate::error::EngineError;

/// What `corral backup run` reports per VM.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub vm: String,
    pub kind: String,
    /// Why a requested incremental read everything, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fell_back: Option<String>,
    /// Filesystems the guest agent froze at the point in time (`None`: crash-consistent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<u64>,
    pub stats: corral_store::BackupStats,
}

fn bitmap_name(backup_id: &str) -> String {
    format!("corral-{backup_id}")
}

fn store_err(e: corral_store::StoreError) -> EngineError {
    EngineError::Tool {
        what: "backup store".into(),
        message: e.to_string(),
    }
}

fn nbd_err(vm: &str) -> impl Fn(corral_nbd::NbdError) -> EngineError + '_ {
    move |e| EngineError::op(vm, "backup", format!("reading the export: {e}"))
}

impl Engine {
    /// The backup store: `[backup] store`, created on first use.
    pub fn backup_store(&self) -> Result<Store, EngineError> {
        let path: PathBuf = self
            .cfg
            .backup
            .store
            .clone()
            .unwrap_or_else(|| self.cfg.data_dir.join("backups"));
        if path.join("store.json").is_file() {
            return Store::open(&path).map_err(store_err);
        }
        let config = StoreConfig {
            chunk_size: self.cfg.backup.chunk_size.0 as u32,
            zstd_level: self.cfg.backup.zstd_level,
            ..StoreConfig::default()
        };
        Store::init(&path, config).map_err(store_err)
    }

    /// Backups in the store, oldest first.
    pub fn backup_list(&self, vm: Option<&str>) -> Result<Vec<Manifest>, EngineError> {
        self.backup_store()?.list(vm).map_err(store_err)
    }

    /// Backs up one VM (live if it runs). `full` forces reading everything.
    pub async fn backup_run(&self, name: &str, full: bool, skeleton: bool) -> Result<BackupReport, EngineError> {
        let spec = self.get_spec(name)?;
        let store = self.backup_store()?;
        let chunk = store.config().chunk_size as u64;
        let parent = store
            .list(Some(spec.name.as_str()))
            .map_err(store_err)?
            .into_iter()
            .rev()
            .find(|m| m.kind != BackupKind::Skeleton);
        let read: Vec<&corral_types::DiskSpec> = spec
            .disks
            .iter()
            .filter(|d| !skeleton || d.role == DiskRole::System)
            .collect();
        // An incremental needs every disk in the parent with the same size, and a bitmap.
        let mut fell_back = None;
        let since = |d: &corral_types::DiskSpec| -> Option<String> {
            let p = parent.as_ref()?;
            if full || skeleton {
                return None;
            }
            let same = p.disks.iter().any(|e| e.info.name == d.name && e.stored);
            same.then(|| bitmap_name(&p.id))
        };
        let since_all: Vec<Option<String>> = read.iter().map(|d| since(d)).collect();
        let incremental = !since_all.is_empty() && since_all.iter().all(Option::is_some);
        let kind = if skeleton {
            BackupKind::Skeleton
        } else if incremental {
            BackupKind::Incremental
        } else {
            BackupKind::Full
        };
        let spec_doc = serde_json::to_value(&spec).map_err(|e| EngineError::op(name, "backup", e.to_string()))?;
        let begin = |kind: BackupKind, parent: Option<String>| {
            store
                .begin(BeginOptions {
                    vm: spec.name.to_string(),
                    kind,
                    parent,
                    spec: spec_doc.clone(),
                })
                .map_err(store_err)
        };
        let requests = |with_since: bool, new_bitmap: String| -> Vec<FleeceRequest> {
            read.iter()
                .zip(&since_all)
                .map(|(d, s)| FleeceRequest {
                    disk: d.name.clone(),
                    since_bitmap: if with_since { s.clone() } else { None },
                    new_bitmap: new_bitmap.clone(),
                    // A skeleton does not start a chain: the next incremental still follows
                    // the last full or incremental backup's bitmap.
                    no_tracking: skeleton,
                    // A full read starts a new chain: older corral bitmaps are done.
                    retire_prefix: (!with_since && !skeleton).then(|| "corral-".to_string()),
                })
                .collect()
        };
        let mut writer = begin(kind, parent.as_ref().filter(|_| incremental).map(|p| p.id.clone()))?;
        let first = self
            .fleece_open(name, &requests(incremental, bitmap_name(writer.id())))
            .await;
        let (fleece, incremental) = match first {
            Ok(f) => (f, incremental),
            Err(EngineError::Invalid { message, .. }) if incremental => {
                // No usable bitmap: read everything (a wrong incremental is never an option).
                tracing::warn!(vm = name, "incremental not possible ({message}); reading in full");
                fell_back = Some(message);
                drop(writer);
                writer = begin(BackupKind::Full, None)?;
                let reqs = requests(false, bitmap_name(writer.id()));
                (self.fleece_open(name, &reqs).await?, false)
            }
            Err(e) => return Err(e),
        };
        let frozen = fleece.frozen;
        // Progress: bytes of the disks' sizes walked, so incrementals race to the end.
        let total: u64 = fleece.disks.iter().map(|d| d.size).sum();
        let job = self.job_begin(
            name,
            "backup",
            &format!("{name} ({})", if incremental { "incremental" } else { "full" }),
        )?;
        let mut base = 0u64;
        let result = async {
            for d in &spec.disks {
                let exported = fleece.disks.iter().find(|x| x.disk == d.name);
                let info = DiskInfo {
                    name: d.name.clone(),
                    size: exported
                        .map(|x| x.size)
                        .unwrap_or_else(|| d.size.map(|s| s.0).unwrap_or(0)),
                    role: d.role.as_str().into(),
                    bus: d.bus.as_str().into(),
                    format: d.format.as_str().into(),
                };
                let Some(x) = exported else {
                    writer.add_skeleton_disk(info).map_err(store_err)?;
                    continue;
                };
                let handle = writer.add_disk(info).map_err(store_err)?;
                let mut opts = ConnectOptions::new(x.export.clone()).timeout(Some(Duration::from_secs(120)));
                if let (true, Some(b)) = (incremental, &x.bitmap) {
                    opts = opts.dirty_bitmap(b);
                }
                let mut nbd = NbdClient::connect_unix(&fleece.socket, &opts)
                    .await
                    .map_err(nbd_err(name))?;
                let size = nbd.size();
                // Which chunk offsets to read: the dirty ones, or every allocated one.
                let mut offsets: Vec<u64> = vec![];
                let extents = match (&x.bitmap, incremental) {
                    (Some(b), true) => nbd.dirty_extents(b).await.map_err(nbd_err(name))?,
                    _ => nbd
                        .allocated_extents()
                        .await
                        .map_err(nbd_err(name))?
                        .into_iter()
                        .filter(|e| !e.is_zero())
                        .collect(),
                };
                for e in extents {
                    let mut off = e.offset / chunk * chunk;
                    while off < e.end() {
                        if offsets.last() != Some(&off) {
                            offsets.push(off);
                        }
                        off += chunk;
                    }
                }
                let mut written = std::collections::HashSet::new();
                let n = offsets.len().max(1) as u64;
                for (k, off) in offsets.into_iter().enumerate() {
                    job.progress(base + size * k as u64 / n, total);
                    let len = chunk.min(size - off) as usize;
                    let data = nbd.read(off, len).await.map_err(nbd_err(name))?;
                    writer.write_chunk(handle, off, &data).map_err(store_err)?;
                    written.insert(off);
                }
                if incremental {
                    writer.copy_all_unchanged_from_parent(handle).map_err(store_err)?;
                } else {
                    // Everything not read is a hole or reads as zeros.
                    let mut off = 0;
                    while off < size {
                        if !written.contains(&off) {
                            writer.zero(handle, off).map_err(store_err)?;
                        }
                        off += chunk;
                    }
                }
                let _ = nbd.close().await;
                base += size;
                job.progress(base, total);
            }
            Ok::<(), EngineError>(())
        }
        .await;
        match result {
            Ok(()) => {
                let stats = writer.stats().clone();
                let id = writer
                    .finish(FinishOptions {
                        tags: spec.tags.clone(),
                    })
                    .map_err(store_err);
                let ok = id.is_ok();
                job.finish(&id, id.as_ref().ok().map(|i| format!("stored backup {i}")));
                let closed = self.fleece_close(fleece, ok).await;
                let id = id?;
                closed?;
                Ok(BackupReport {
                    id,
                    vm: spec.name.to_string(),
                    kind: if incremental {
                        "incremental"
                    } else if skeleton {
                        "skeleton"
                    } else {
                        "full"
                    }
                    .into(),
                    fell_back,
                    frozen,
                    stats,
                })
            }
            Err(e) => {
                job.finish(&Err::<(), _>(EngineError::op(name, "backup", e.to_string())), None);
                drop(writer);
                let _ = self.fleece_close(fleece, false).await;
                Err(e)
            }
        }
    }
}

/// The spec a backup was taken with.
pub fn manifest_spec(m: &Manifest) -> Option<VmSpec> {
    serde_json::from_value(m.spec.clone()).ok()
}

/// One line of `corral backup list`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub vm: String,
    /// `full`, `incremental` or `skeleton`.
    pub kind: String,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Sum of the stored disks' sizes.
    pub logical_size: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub duration_ms: u64,
}

impl From<&Manifest> for BackupSummary {
    fn from(m: &Manifest) -> Self {
        BackupSummary {
            id: m.id.clone(),
            vm: m.vm.clone(),
            kind: match m.kind {
                BackupKind::Full => "full",
                BackupKind::Incremental => "incremental",
                BackupKind::Skeleton => "skeleton",
            }
            .into(),
            time: m.time.clone(),
            parent: m.parent.clone(),
            logical_size: m.disks.iter().filter(|d| d.stored).map(|d| d.info.size).sum(),
            new_bytes: m.stats.new_bytes,
            stored_bytes: m.stats.stored_bytes,
            duration_ms: m.stats.duration_ms,
        }
    }
}

impl Engine {
    /// Restores a backup as a new VM: every stored disk is written (hash-checked, sparse) and
    /// converted to qcow2; a disk the backup did not store comes back empty at its size.
    pub async fn backup_restore(&self, id: &str, as_name: &str) -> Result<VmSpec, EngineError> {
        let new = corral_types::VmName::new(as_name)?;
        let store = self.backup_store()?;
        let m = store.manifest(id).map_err(|e| {
            EngineError::invalid("-", "restore", format!("{e}; `corral backup list` shows the backups"))
        })?;
        let mut spec = manifest_spec(&m)
            .ok_or_else(|| EngineError::op(&m.vm, "restore", "the backup's VM spec cannot be read"))?;
        if self.reg().get(new.as_str())?.is_some() {
            return Err(EngineError::Exists(new.to_string()));
        }
        let _lock = self.lock(&new, "restore")?;
        let paths = self.paths(&new);
        if paths.data.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(EngineError::invalid(
                as_name,
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
        let mut created: Vec<PathBuf> = vec![];
        let result = (|| {
            for entry in &m.disks {
                let Some(d) = spec.disks.iter_mut().find(|d| d.name == entry.info.name) else {
                    continue;
                };
                let target = paths.disk(&d.name);
                created.push(target.clone());
                if entry.stored {
                    let raw = paths.data.join(format!("{}.restore.raw", d.name));
                    created.push(raw.clone());
                    let mut f = std::fs::File::create(&raw).map_err(EngineError::io(&raw))?;
                    let reader = store.read_disk(id, &d.name).map_err(store_err)?;
                    let size = reader.restore_to(&mut f).map_err(store_err)?;
                    f.set_len(size).map_err(EngineError::io(&raw))?;
                    f.sync_all().map_err(EngineError::io(&raw))?;
                    let (r, t) = (raw.display().to_string(), target.display().to_string());
                    self.qemu_img(
                        &["convert", "-f", "raw", "-O", "qcow2", "-o", "lazy_refcounts=on", &r, &t],
                        "qemu-img convert (restore)",
                    )?;
                    let _ = std::fs::remove_file(&raw);
                } else {
                    super::define::create_qcow2(
                        &self.cfg.qemu.img_binary,
                        &target,
                        corral_types::ByteSize(entry.info.size),
                    )?;
                }
                d.path = Some(target);
                d.format = corral_types::DiskFormat::Qcow2;
                d.size = Some(corral_types::ByteSize(entry.info.size));
            }
            self.normalize(&mut spec, None);
            self.reg().insert(&spec)
        })();
        if let Err(e) = result {
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            let _ = std::fs::remove_dir(&paths.data);
            return Err(e);
        }
        Ok(spec)
    }
}

impl Engine {
    /// The VMs a `backup run` selects: the names given, every VM with one of the tags, or all
    /// (minus the excluded). Unknown names and tags that match nothing are errors.
    pub fn backup_select(
        &self,
        names: &[String],
        tags: &[String],
        all: bool,
        exclude: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let records = self.records()?;
        for n in names.iter().chain(exclude) {
            self.get(n)?;
        }
        let mut out: Vec<String> = if all {
            records.iter().map(|r| r.spec.name.to_string()).collect()
        } else {
            names.to_vec()
        };
        for t in tags {
            let tagged: Vec<String> = records
                .iter()
                .filter(|r| r.spec.tags.contains(t))
                .map(|r| r.spec.name.to_string())
                .collect();
            if tagged.is_empty() {
                return Err(EngineError::invalid("-", "backup", format!("no VM has the tag {t:?}")));
            }
            out.extend(tagged);
        }
        out.retain(|n| !exclude.contains(n));
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(EngineError::invalid(
                "-",
                "backup",
                "no VM selected; name VMs, or use --tag or --all",
            ));
        }
        Ok(out)
    }

    /// Re-hashes every chunk the given backups (all without ids) refer to.
    pub fn backup_verify(&self, ids: &[String]) -> Result<corral_store::VerifyReport, EngineError> {
        self.backup_store()?.verify(ids).map_err(|e| match e {
            // A mistyped id is bad input (exit 2), like for show, restore and drill.
            corral_store::StoreError::BackupNotFound(_) => {
                EngineError::invalid("-", "verify", format!("{e}; `corral backup list` shows the backups"))
            }
            e => store_err(e),
        })
    }

    /// Applies a keep-* policy to one VM's backups.
    pub fn backup_prune(
        &self,
        vm: &str,
        policy: &corral_store::PrunePolicy,
        dry_run: bool,
    ) -> Result<Vec<corral_store::PruneDecision>, EngineError> {
        self.backup_store()?.prune(vm, policy, dry_run).map_err(store_err)
    }

    /// Frees chunks no backup refers to, and the debris of killed writers.
    pub fn store_gc(&self) -> Result<corral_store::GcReport, EngineError> {
        let opts = corral_store::GcOptions {
            wait: false,
            ..Default::default()
        };
        self.backup_store()?.gc(&opts).map_err(store_err)
    }
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
            .map_err(|e| EngineError::invalid("-", "drill", format!("{e}; `corral backup list` shows the backups")))?;
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
        let restored = self.backup_restore(id, &temp).await?;
        let result = self.drill_boot(&restored, expect_line, timeout).await;
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
        spec: &VmSpec,
        expect_line: Option<&str>,
        timeout: Duration,
    ) -> Result<(bool, String, u64, Vec<String>), EngineError> {
        let name = spec.name.to_string();
        // No network: a drill must never appear on the LAN next to the real VM.
        let mut rec = self.get(&name)?;
        rec.spec.network.mode = corral_types::NetworkMode::None;
        rec.spec.network.mac = None;
        rec.spec.display.mode = corral_types::DisplayMode::None;
        self.reg().update(&rec.spec, rec.generation)?;
        let started = std::time::Instant::now();
        self.start(&name).await?;
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

impl Engine {
    /// One backup's manifest.
    pub fn backup_manifest(&self, id: &str) -> Result<Manifest, EngineError> {
        self.backup_store()?
            .manifest(id)
            .map_err(|e| EngineError::invalid("-", "backup", format!("{e}; `corral backup list` shows the backups")))
    }
}
