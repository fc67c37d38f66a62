//! `BackupWriter`: one backup being written.
//!
//! New chunks go into pack files of this writer's own; the backup's disk indexes and
//! manifest are written at `finish` into `tmp/ID/` and the directory is renamed to
//! `backups/ID` once everything it refers to is durable. Until then nothing of it is listed,
//! and a writer dropped (or killed) early leaves only files gc removes.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use crate::chunk::{self, ChunkHash};
use crate::error::{ctx, Result, StoreError};
use crate::fsutil;
use crate::index::{slot_count, DiskIndex};
use crate::lock::{self, StoreLock};
use crate::manifest::{self, BackupKind, BackupStats, DiskEntry, DiskInfo, Manifest};
use crate::pack::{PackWriter, RECORD_HEADER_LEN};
use crate::store::Store;

/// What a backup is of; given to [`Store::begin`].
#[derive(Clone, Debug)]
pub struct BeginOptions {
    pub vm: String,
    pub kind: BackupKind,
    /// Required for incrementals: unchanged chunks are taken from this backup.
    pub parent: Option<String>,
    /// The VM's spec document, stored as is.
    pub spec: serde_json::Value,
}

/// Added to the manifest at [`BackupWriter::finish`].
#[derive(Clone, Debug, Default)]
pub struct FinishOptions {
    pub tags: Vec<String>,
}

/// A disk of the backup being written (from [`BackupWriter::add_disk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskHandle(usize);

struct DiskState {
    entry: DiskEntry,
    slots: Vec<Option<ChunkHash>>,
    parent: Option<DiskIndex>,
}

pub struct BackupWriter {
    store: Store,
    _lock: StoreLock,
    id: String,
    start_ms: i64,
    started: Instant,
    opts: BeginOptions,
    disks: Vec<DiskState>,
    pack: Option<PackWriter>,
    /// Full packs being made durable on threads of their own while the next one fills;
    /// their chunks stay in `in_pack` until they are in the store-wide map.
    closing: std::collections::VecDeque<Publishing>,
    /// Chunks in `pack` (not yet in the store-wide map).
    in_pack: HashSet<ChunkHash>,
    stats: BackupStats,
    finished: bool,
    /// zstd level for this writer's new chunks (the store's unless set).
    level: i32,
}

/// A pack being published: its id and entries once durable.
type Publishing = std::thread::JoinHandle<Result<(String, Vec<crate::pack::PackEntry>)>>;

/// Packs published in the background at once (each holds up to `pack_target` bytes).
const CLOSING: usize = 2;

impl Store {
    /// Starts a backup. Holds the store lock shared until the writer is finished or dropped,
    /// so gc cannot run under it.
    pub fn begin(&self, opts: BeginOptions) -> Result<BackupWriter> {
        if opts.vm.is_empty() {
            return Err(StoreError::Invalid("a backup needs a VM name".into()));
        }
        let lock = lock::shared(self.root())?;
        // Packs gc removed or other writers finished since open.
        self.refresh()?;
        match (&opts.parent, opts.kind) {
            (None, BackupKind::Incremental) => {
                return Err(StoreError::Invalid(
                    "an incremental backup needs a parent backup".into(),
                ))
            }
            (Some(p), _) => {
                let pm = self.manifest(p)?;
                if pm.vm != opts.vm {
                    return Err(StoreError::Invalid(format!(
                        "parent backup {p} is of VM {}, not {}",
                        pm.vm, opts.vm
                    )));
                }
            }
            _ => {}
        }
        let start_ms = manifest::now_ms();
        Ok(BackupWriter {
            store: self.clone(),
            _lock: lock,
            id: manifest::new_backup_id(start_ms),
            start_ms,
            started: Instant::now(),
            opts,
            disks: Vec::new(),
            pack: None,
            closing: Default::default(),
            in_pack: HashSet::new(),
            stats: BackupStats::default(),
            finished: false,
            level: self.config().zstd_level,
        })
    }
}

impl BackupWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn stats(&self) -> &BackupStats {
        &self.stats
    }

    /// Compresses this backup's new chunks at `level` (1..=22, or -7..=-1) instead of the store's
    /// default. The level is not part of the format: readers never need it.
    pub fn set_zstd_level(&mut self, level: i32) -> Result<()> {
        crate::store::check_zstd_level(level)?;
        self.level = level;
        Ok(())
    }

    fn check_new_disk(&self, info: &DiskInfo) -> Result<()> {
        if info.name.is_empty() || self.disks.iter().any(|d| d.entry.info.name == info.name) {
            return Err(StoreError::Invalid(format!(
                "disk name {:?} is empty or already in this backup",
                info.name
            )));
        }
        Ok(())
    }

    /// Adds a disk whose content will be stored. In an incremental, the parent's disk of
    /// the same name (if any) is what `copy_unchanged_from_parent` copies from.
    pub fn add_disk(&mut self, info: DiskInfo) -> Result<DiskHandle> {
        self.check_new_disk(&info)?;
        let cs = self.store.config().chunk_size;
        let parent = match (&self.opts.parent, self.opts.kind) {
            (Some(p), BackupKind::Incremental) => {
                let pm = self.store.manifest(p)?;
                match pm.disk(&info.name) {
                    Some(d) if d.stored => {
                        let idx = self.store.disk_index(&pm, &info.name)?;
                        if idx.chunk_size != cs {
                            return Err(StoreError::Invalid(format!(
                                "parent {p} disk {:?} has {} byte chunks, the store {cs}",
                                info.name, idx.chunk_size
                            )));
                        }
                        Some(idx)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let n = slot_count(info.size, cs) as usize;
        let idx = self.disks.len();
        self.disks.push(DiskState {
            entry: DiskEntry {
                index: Some(format!("disk-{idx}.didx")),
                info,
                chunk_size: cs,
                stored: true,
            },
            slots: vec![None; n],
            parent,
        });
        Ok(DiskHandle(idx))
    }

    /// Records a disk in the manifest without its content.
    pub fn add_skeleton_disk(&mut self, info: DiskInfo) -> Result<()> {
        self.check_new_disk(&info)?;
        self.disks.push(DiskState {
            entry: DiskEntry {
                info,
                chunk_size: self.store.config().chunk_size,
                index: None,
                stored: false,
            },
            slots: Vec::new(),
            parent: None,
        });
        Ok(())
    }

    /// Slot number of `offset`, which must be chunk-aligned and inside the disk, and the
    /// chunk's length there.
    fn slot(&self, d: DiskHandle, offset: u64) -> Result<(usize, usize)> {
        let disk = self
            .disks
            .get(d.0)
            .filter(|s| s.entry.stored)
            .ok_or_else(|| StoreError::Invalid("not a stored disk of this backup".into()))?;
        let cs = disk.entry.chunk_size as u64;
        let size = disk.entry.info.size;
        if !offset.is_multiple_of(cs) || offset >= size {
            return Err(StoreError::Invalid(format!(
                "disk {:?}: offset {offset} is not a chunk boundary ({cs} bytes) inside the \
                 disk ({size} bytes)",
                disk.entry.info.name
            )));
        }
        Ok(((offset / cs) as usize, (size - offset).min(cs) as usize))
    }

    /// Stores the chunk at `offset` (a chunk boundary); `data` is the whole chunk (shorter
    /// only at the disk's end). All-zero data is recorded as ZERO and not stored.
    pub fn write_chunk(&mut self, d: DiskHandle, offset: u64, data: &[u8]) -> Result<()> {
        // On this thread the writer knows its own unpublished pack, so a chunk repeated
        // within one backup is not even compressed twice.
        let prepared = if chunk::is_all_zero(data) {
            Prepared::Zero
        } else {
            let h = ChunkHash::of(data);
            if self.in_pack.contains(&h) || self.store.contains(&h) {
                Prepared::Known(h)
            } else {
                let (enc, stored) = chunk::encode(data, self.level);
                Prepared::New(h, enc, stored)
            }
        };
        self.put_prepared(
            d,
            offset,
            PreparedChunk {
                len: data.len(),
                kind: prepared,
            },
        )
    }

    /// A handle that hashes and compresses chunks on other threads; hand the results to
    /// [`BackupWriter::put_prepared`]. This is how a reader keeps both cores busy.
    pub fn preparer(&self) -> ChunkPreparer {
        ChunkPreparer {
            store: self.store.clone(),
            level: self.level,
        }
    }

    /// Records a chunk made by [`ChunkPreparer::prepare`] at `offset` (a chunk boundary).
    pub fn put_prepared(&mut self, d: DiskHandle, offset: u64, p: PreparedChunk) -> Result<()> {
        let (slot, len) = self.slot(d, offset)?;
        if p.len != len {
            return Err(StoreError::Invalid(format!(
                "chunk at offset {offset} has {} bytes, expected {len}",
                p.len
            )));
        }
        self.stats.bytes_read += len as u64;
        let h = match p.kind {
            Prepared::Zero => {
                self.stats.zero_chunks += 1;
                ChunkHash::ZERO
            }
            Prepared::New(h, enc, stored) if !(self.in_pack.contains(&h) || self.store.contains(&h)) => {
                self.store_new(h, len, enc, &stored)?;
                h
            }
            Prepared::Known(h) | Prepared::New(h, ..) => {
                self.stats.reused_chunks += 1;
                self.stats.reused_bytes += len as u64;
                h
            }
        };
        self.disks[d.0].slots[slot] = Some(h);
        Ok(())
    }

    fn store_new(&mut self, h: ChunkHash, raw_len: usize, enc: chunk::Encoding, stored: &[u8]) -> Result<()> {
        if self.pack.is_none() {
            self.pack = Some(PackWriter::create(&self.store.packs_dir())?);
        }
        let pack = self.pack.as_mut().unwrap();
        pack.append(h, enc, raw_len as u32, stored)?;
        self.in_pack.insert(h);
        self.stats.new_chunks += 1;
        self.stats.new_bytes += raw_len as u64;
        self.stats.stored_bytes += RECORD_HEADER_LEN + stored.len() as u64;
        if pack.len() >= self.store.config().pack_target {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// Starts publishing the current pack (fsync, index, rename) on a thread of its own, so
    /// the disk writes it back while the next pack fills; at most `CLOSING` at a time.
    fn finish_pack(&mut self) -> Result<()> {
        if let Some(p) = self.pack.take() {
            if p.is_empty() {
                return Ok(());
            }
            while self.closing.len() >= CLOSING {
                self.reap_one()?;
            }
            self.closing.push_back(std::thread::spawn(move || p.finish()));
        }
        Ok(())
    }

    /// Waits for the oldest pack being published and puts its chunks in the store-wide map.
    fn reap_one(&mut self) -> Result<()> {
        let Some(t) = self.closing.pop_front() else {
            return Ok(());
        };
        let (id, entries) = t
            .join()
            .map_err(|_| StoreError::Invalid("a pack's publishing thread panicked".into()))??;
        self.store.inner.map.write().unwrap().add_pack(&id, &entries);
        for e in &entries {
            self.in_pack.remove(&e.hash);
        }
        Ok(())
    }

    /// Publishes the current pack and waits for every pack still being published.
    fn finish_all_packs(&mut self) -> Result<()> {
        self.finish_pack()?;
        while !self.closing.is_empty() {
            self.reap_one()?;
        }
        Ok(())
    }

    /// Records the chunk at `offset` as all zeros without data.
    pub fn zero(&mut self, d: DiskHandle, offset: u64) -> Result<()> {
        let (slot, _) = self.slot(d, offset)?;
        self.stats.zero_chunks += 1;
        self.disks[d.0].slots[slot] = Some(ChunkHash::ZERO);
        Ok(())
    }

    /// Takes the chunk at `offset` from the parent backup unread.
    pub fn copy_unchanged_from_parent(&mut self, d: DiskHandle, offset: u64) -> Result<()> {
        let (slot, len) = self.slot(d, offset)?;
        let disk = &mut self.disks[d.0];
        let parent = disk.parent.as_ref().ok_or_else(|| {
            StoreError::Invalid(format!(
                "disk {:?} has no parent disk to copy from (full backup, or a disk the parent \
                 did not store)",
                disk.entry.info.name
            ))
        })?;
        if slot >= parent.chunks.len() || parent.chunk_len(slot) != len {
            return Err(StoreError::Invalid(format!(
                "disk {:?}: the parent's disk ({} bytes) has no whole chunk at offset {offset}; \
                 write it instead",
                disk.entry.info.name, parent.disk_size
            )));
        }
        let h = parent.chunks[slot];
        disk.slots[slot] = Some(h);
        if h.is_zero() {
            self.stats.zero_chunks += 1;
        } else {
            self.stats.parent_chunks += 1;
        }
        Ok(())
    }

    /// Takes every chunk not written so far from the parent; returns how many.
    pub fn copy_all_unchanged_from_parent(&mut self, d: DiskHandle) -> Result<u64> {
        let cs = self.store.config().chunk_size as u64;
        let todo: Vec<u64> = self
            .disks
            .get(d.0)
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.is_none())
                    .map(|(i, _)| i as u64 * cs)
                    .collect()
            })
            .unwrap_or_default();
        for &off in &todo {
            self.copy_unchanged_from_parent(d, off)?;
        }
        Ok(todo.len() as u64)
    }

    /// Completes the backup and makes it visible; returns its id.
    pub fn finish(mut self, extras: FinishOptions) -> Result<String> {
        for d in &self.disks {
            if let Some(i) = d.slots.iter().position(|s| s.is_none()) {
                return Err(StoreError::Invalid(format!(
                    "disk {:?}: the chunk at offset {} was never written (write, zero or copy \
                     it from the parent)",
                    d.entry.info.name,
                    i as u64 * d.entry.chunk_size as u64
                )));
            }
        }
        // 1. Every chunk durable and indexed.
        self.finish_all_packs()?;
        // 2. Indexes and manifest in tmp/ID, fsynced.
        let tmp = self.staging_dir();
        fs::create_dir(&tmp).map_err(ctx(&tmp))?;
        for d in &self.disks {
            if let Some(name) = &d.entry.index {
                let idx = DiskIndex {
                    disk_size: d.entry.info.size,
                    chunk_size: d.entry.chunk_size,
                    chunks: d.slots.iter().map(|s| s.unwrap()).collect(),
                };
                fsutil::write_new_synced(&tmp.join(name), &idx.encode())?;
            }
        }
        self.stats.duration_ms = self.started.elapsed().as_millis() as u64;
        let m = Manifest {
            format_version: manifest::MANIFEST_VERSION,
            id: self.id.clone(),
            vm: self.opts.vm.clone(),
            spec: self.opts.spec.clone(),
            kind: self.opts.kind,
            parent: self.opts.parent.clone(),
            time: manifest::rfc3339(self.start_ms),
            time_unix: self.start_ms.div_euclid(1000),
            tags: extras.tags,
            disks: self.disks.iter().map(|d| d.entry.clone()).collect(),
            stats: self.stats.clone(),
        };
        let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        fsutil::write_new_synced(&tmp.join("manifest.json"), &json)?;
        fsutil::fsync_dir(&tmp)?;
        // 3. One rename makes the whole backup visible.
        let dest = self.store.backups_dir().join(&self.id);
        fs::rename(&tmp, &dest).map_err(ctx(&dest))?;
        fsutil::fsync_dir(&self.store.backups_dir())?;
        self.finished = true;
        Ok(self.id.clone())
    }

    fn staging_dir(&self) -> PathBuf {
        self.store.tmp_dir().join(&self.id)
    }
}

/// A chunk hashed, and compressed if the store lacks it, by a [`ChunkPreparer`].
pub struct PreparedChunk {
    len: usize,
    kind: Prepared,
}

enum Prepared {
    Zero,
    /// Already in the store when prepared.
    Known(ChunkHash),
    /// Not in the store when prepared (another thread may store it first: then it counts
    /// as reused and the compressed bytes are dropped).
    New(ChunkHash, chunk::Encoding, Vec<u8>),
}

impl PreparedChunk {
    /// The uncompressed length.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Hashes and compresses chunks for one writer, on any thread (`Clone + Send`).
#[derive(Clone)]
pub struct ChunkPreparer {
    store: Store,
    level: i32,
}

impl ChunkPreparer {
    pub fn prepare(&self, data: &[u8]) -> PreparedChunk {
        let kind = if chunk::is_all_zero(data) {
            Prepared::Zero
        } else {
            let h = ChunkHash::of(data);
            if self.store.contains(&h) {
                Prepared::Known(h)
            } else {
                let (enc, stored) = chunk::encode(data, self.level);
                Prepared::New(h, enc, stored)
            }
        };
        PreparedChunk { len: data.len(), kind }
    }
}

impl Drop for BackupWriter {
    /// An unfinished writer removes its partial pack (PackWriter's Drop) and staging
    /// directory; packs it already finished stay until gc finds them unreferenced.
    fn drop(&mut self) {
        // Packs still being published finish before the store lock goes (it is a field,
        // dropped after this): gc must never see one half-written and take it for debris.
        for t in self.closing.drain(..) {
            let _ = t.join();
        }
        if !self.finished {
            let _ = fs::remove_dir_all(self.staging_dir());
        }
    }
}
