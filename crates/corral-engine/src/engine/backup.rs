//! `corral backup run` and `list`: the glue from the point-in-time export (`fleece.rs`)
//! through our NBD client (`corral-nbd`) into the store (`corral-store`).
//!
//! Each disk keeps one persistent dirty bitmap named after the backup it belongs to
//! (`corral-<backup id>`). An incremental reads only the chunks that bitmap marks and takes
//! the rest from the parent backup; when the bitmap is missing, inconsistent (QEMU was
//! killed) or the parent does not match, the backup reads everything instead (still storing
//! only new chunks), so an incremental is never wrong.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_nbd::{ConnectOptions, NbdClient};
pub use corral_store::PrunePolicy;
use corral_store::{BackupKind, BeginOptions, DiskInfo, FinishOptions, Manifest, Store, StoreConfig};
use corral_types::{DiskRole, VmSpec};
use serde::Serialize;

use super::fleece::FleeceRequest;
use super::pipeline::{store_chunks, Counters, ReadPlan, READERS};
use super::Engine;
use crate::error::EngineError;

/// What `corral backup run` reports per VM.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackupReport {
    pub id: String,
    pub vm: String,
    pub kind: String,
    /// Why a requested incremental read everything, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fell_back: Option<String>,
    /// Things that went wrong after the backup was safely stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Filesystems the guest agent froze at the point in time (`None`: crash-consistent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<u64>,
    pub stats: corral_store::BackupStats,
}

fn bitmap_name(backup_id: &str) -> String {
    format!("corral-{backup_id}")
}

/// A backup id the store does not know (or cannot read) is bad input, pointing at the list.
pub(crate) fn no_such_backup(op: &str, e: corral_store::StoreError) -> EngineError {
    let message = format!("{e}; `corral backup list` shows the backups");
    match e {
        // Not found (exit 2 like bad input; 404 over the API).
        corral_store::StoreError::BackupNotFound(_) => EngineError::NoSuchBackup {
            operation: op.to_string(),
            message,
        },
        _ => EngineError::invalid("-", op, message),
    }
}

pub(crate) fn store_err(e: corral_store::StoreError) -> EngineError {
    EngineError::Tool {
        what: "backup store".into(),
        message: e.to_string(),
    }
}

fn nbd_err(vm: &str) -> impl Fn(corral_nbd::NbdError) -> EngineError + '_ {
    move |e| EngineError::op(vm, "backup", format!("reading the export: {e}"))
}

impl Engine {
    pub(crate) fn store_path(&self) -> PathBuf {
        self.cfg
            .backup
            .store
            .clone()
            .unwrap_or_else(|| self.cfg.data_dir.join("backups"))
    }

    /// Whether `[backup] store` holds a store (its `store.json` is written last).
    pub(crate) fn store_exists(&self) -> bool {
        self.store_path().join("store.json").is_file()
    }

    /// The backup store for reading: commands that only read never create one.
    pub fn backup_store(&self) -> Result<Store, EngineError> {
        let path = self.store_path();
        if self.store_exists() {
            return Store::open(&path).map_err(store_err);
        }
        Err(EngineError::invalid(
            "-",
            "backup",
            format!(
                "there are no backups yet: {} is not a backup store ([backup] store in the config); \
                 `corral backup run VM` creates it",
                path.display()
            ),
        ))
    }

    /// The backup store for writing: `[backup] store`, created on first use.
    pub fn backup_store_for_writing(&self) -> Result<Store, EngineError> {
        if self.store_exists() {
            return self.backup_store();
        }
        let config = StoreConfig {
            chunk_size: self.cfg.backup.chunk_size.0 as u32,
            zstd_level: self.cfg.backup.zstd_level,
            ..StoreConfig::default()
        };
        Store::init(self.store_path(), config).map_err(store_err)
    }

    /// Backups in the store, oldest first.
    pub fn backup_list(&self, vm: Option<&str>) -> Result<Vec<Manifest>, EngineError> {
        if !self.store_exists() {
            return Ok(vec![]);
        }
        self.backup_store()?.list(vm).map_err(store_err)
    }

    /// Backs up one VM (live if it runs). `full` forces reading everything; `skeleton`
    /// (system disks only) defaults to the VM's `[backup] skeleton` setting.
    pub async fn backup_run(
        &self,
        name: &str,
        full: bool,
        skeleton: Option<bool>,
    ) -> Result<BackupReport, EngineError> {
        let spec = self.get_spec(name)?;
        let skeleton = skeleton.unwrap_or(spec.backup.skeleton);
        let store = self.backup_store_for_writing()?;
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
            let mut w = store
                .begin(BeginOptions {
                    vm: spec.name.to_string(),
                    kind,
                    parent,
                    spec: spec_doc.clone(),
                })
                .map_err(store_err)?;
            w.set_zstd_level(self.cfg.backup.zstd_level).map_err(store_err)?;
            Ok::<_, EngineError>(w)
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
        let counters = Arc::new(Counters::default());
        let mut base = 0u64;
        let mut slot = Some(writer);
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
                let mut writer = slot.take().expect("the writer is back after each disk");
                let Some(x) = exported else {
                    writer.add_skeleton_disk(info).map_err(store_err)?;
                    slot = Some(writer);
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
                let mut offsets: Vec<u64> = vec![];
                for e in extents {
                    let mut off = e.offset / chunk * chunk;
                    while off < e.end() {
                        if offsets.last() != Some(&off) {
                            offsets.push(off);
                        }
                        off += chunk;
                    }
                }
                let n = offsets.len().max(1) as u64;
                // More connections (without the bitmap context: they only read data).
                let mut readers = vec![];
                for _ in 1..READERS {
                    let o = ConnectOptions::new(x.export.clone()).timeout(Some(Duration::from_secs(120)));
                    readers.push(
                        NbdClient::connect_unix(&fleece.socket, &o)
                            .await
                            .map_err(nbd_err(name))?,
                    );
                }
                readers.push(nbd);
                let (mut writer, written) = store_chunks(
                    name,
                    readers,
                    writer,
                    ReadPlan {
                        disk: handle,
                        offsets: &offsets,
                        chunk,
                    },
                    &counters,
                    |k| job.progress_bytes(base + size * k as u64 / n, total, counters.snapshot()),
                )
                .await?;
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
                slot = Some(writer);
                base += size;
                job.progress_bytes(base, total, counters.snapshot());
            }
            Ok::<(), EngineError>(())
        }
        .await;
        match (result, slot) {
            (Ok(()), Some(writer)) => {
                let id = writer
                    .finish(FinishOptions {
                        tags: spec.tags.clone(),
                    })
                    .and_then(|id| store.manifest(&id))
                    .map_err(store_err);
                let ok = id.is_ok();
                job.finish(&id, id.as_ref().ok().map(|m| format!("stored backup {}", m.id)));
                let closed = self.fleece_close(fleece, ok).await;
                let m = id?;
                // The backup is complete and listed: a failed clean-up is worth a warning,
                // not a failure (the next backup checks the bitmaps it finds).
                let warnings = match closed {
                    Ok(()) => vec![],
                    Err(e) => vec![format!("the backup is stored, but closing the export failed: {e}")],
                };
                Ok(BackupReport {
                    id: m.id,
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
                    warnings,
                    frozen,
                    stats: m.stats,
                })
            }
            (result, slot) => {
                let e = result
                    .err()
                    .unwrap_or_else(|| EngineError::op(name, "backup", "the writer was lost"));
                job.finish(&Err::<(), _>(EngineError::op(name, "backup", e.to_string())), None);
                drop(slot);
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The VMs a `backup run` selects: the names given, every VM with one of the tags, or all
    /// (minus the excluded). Unknown names and tags that match nothing are errors.
    pub fn backup_select(
        &self,
        names: &[String],
        tags: &[String],
        all: bool,
        exclude: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let known: Vec<(String, Vec<String>)> = self
            .records()?
            .into_iter()
            .map(|r| (r.spec.name.to_string(), r.spec.tags))
            .collect();
        select_vms(&known, names, tags, all, exclude)
    }

    /// Re-hashes every chunk the given backups refer to. A target is a backup id or a VM
    /// name (all its backups); none means every backup in the store.
    pub fn backup_verify(&self, targets: &[String]) -> Result<corral_store::VerifyReport, EngineError> {
        let store = self.backup_store()?;
        let mut ids: Vec<String> = vec![];
        if !targets.is_empty() {
            let all = store.list(None).map_err(store_err)?;
            for t in targets {
                let of_vm: Vec<String> = all.iter().filter(|m| &m.vm == t).map(|m| m.id.clone()).collect();
                if !of_vm.is_empty() {
                    ids.extend(of_vm);
                } else if all.iter().any(|m| &m.id == t) || corral_store::is_backup_id(t) {
                    ids.push(t.clone());
                } else {
                    return Err(EngineError::invalid(
                        "-",
                        "verify",
                        format!("{t:?} is neither a backup id nor a VM with backups; `corral backup list` shows them"),
                    ));
                }
            }
        }
        store.verify(&ids).map_err(|e| match e {
            // A mistyped id is bad input (exit 2), like for show, restore and drill.
            corral_store::StoreError::BackupNotFound(_) => no_such_backup("verify", e),
            e => store_err(e),
        })
    }

    /// The VMs that have backups in the store (also deleted ones), sorted: what `backup
    /// prune --all` and a prune schedule with `all = true` work on.
    pub fn backup_vms(&self) -> Result<Vec<String>, EngineError> {
        let mut v: Vec<String> = self.backup_list(None)?.into_iter().map(|m| m.vm).collect();
        v.sort();
        v.dedup();
        Ok(v)
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

    /// Frees chunks no backup refers to, and the debris of killed writers. Refused while a
    /// backup, restore or verify uses the store.
    pub fn store_gc(&self) -> Result<corral_store::GcReport, EngineError> {
        self.store_gc_with(false)
    }

    /// `store_gc`, but waits for the backups, restores and verifies using the store to end
    /// (scheduled gc: a backup due at the same time must not make it fail).
    pub fn store_gc_waiting(&self) -> Result<corral_store::GcReport, EngineError> {
        self.store_gc_with(true)
    }

    fn store_gc_with(&self, wait: bool) -> Result<corral_store::GcReport, EngineError> {
        let opts = corral_store::GcOptions {
            wait,
            ..Default::default()
        };
        self.backup_store()?.gc(&opts).map_err(store_err)
    }
}

impl Engine {
    /// One backup's manifest.
    pub fn backup_manifest(&self, id: &str) -> Result<Manifest, EngineError> {
        if !self.store_exists() {
            return Err(EngineError::NoSuchBackup {
                operation: "backup".into(),
                message: format!("no backup {id}: there are no backups yet"),
            });
        }
        self.backup_store()?
            .manifest(id)
            .map_err(|e| no_such_backup("backup", e))
    }
}

/// Which VMs a selection means, among `known` (name, tags): the names given, every VM with
/// one of the tags, or all; minus `exclude`; sorted, each once. Unknown names, a tag no VM
/// has, or an empty result are errors. (`backup run` here and over `--remote` use this.)
pub fn select_vms(
    known: &[(String, Vec<String>)],
    names: &[String],
    tags: &[String],
    all: bool,
    exclude: &[String],
) -> Result<Vec<String>, EngineError> {
    for n in names.iter().chain(exclude) {
        corral_types::VmName::new(n)?;
        if !known.iter().any(|(k, _)| k == n) {
            return Err(EngineError::NotFound(n.clone()));
        }
    }
    let mut out: Vec<String> = if all {
        known.iter().map(|(n, _)| n.clone()).collect()
    } else {
        names.to_vec()
    };
    for t in tags {
        let tagged: Vec<String> = known
            .iter()
            .filter(|(_, ts)| ts.contains(t))
            .map(|(n, _)| n.clone())
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
