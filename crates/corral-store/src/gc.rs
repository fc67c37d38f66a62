//! Garbage collection: removes debris of writers that died, and packs (or the parts of packs)
//! no complete backup refers to. Runs under the exclusive store lock, so no writer, reader
//! or delete is alive while it decides what is garbage.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;

use serde::Serialize;

use crate::chunk::{self, ChunkHash};
use crate::error::{ctx, Result, StoreError};
use crate::fsutil;
use crate::lock;
use crate::pack::{self, PackEntry, PackWriter};
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Wait for running backups/restores instead of failing with [`StoreError::Busy`].
    pub wait: bool,
    /// A pack whose garbage is more than this share of its chunk bytes is rewritten with
    /// only its live chunks; below it, the garbage stays until the share grows.
    pub repack_threshold: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            wait: true,
            repack_threshold: 0.5,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GcReport {
    /// Chunk records removed (unreferenced, or duplicate copies).
    pub chunks_freed: u64,
    /// Bytes the store's files shrank by, debris included.
    pub bytes_freed: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// Partial packs, temp files and staging directories of writers that died.
    pub debris_files: u64,
    /// Distinct chunks the complete backups refer to.
    pub referenced_chunks: u64,
    /// Referenced chunks found in no pack (verify names the backups).
    pub missing_chunks: u64,
    /// Packs left alone because a live chunk in them could not be read back intact.
    pub damaged_packs: Vec<String>,
}

fn size_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn remove_tree(p: &Path) -> Result<u64> {
    let mut n = 0;
    if p.is_dir() {
        for name in fsutil::list_names(p)? {
            n += remove_tree(&p.join(name))?;
        }
        fs::remove_dir(p).map_err(ctx(p))?;
    } else {
        n = size_of(p);
        fs::remove_file(p).map_err(ctx(p))?;
    }
    Ok(n)
}

impl Store {
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let _l = lock::exclusive(self.root(), opts.wait)?;
        let mut r = GcReport::default();

        // 1. Debris: nobody else holds the lock, so every staging dir, temp file and pack
        //    without an index belongs to a writer that is gone.
        for name in fsutil::list_names(&self.tmp_dir())? {
            r.bytes_freed += remove_tree(&self.tmp_dir().join(name))?;
            r.debris_files += 1;
        }
        let packs_dir = self.packs_dir();
        let names: HashSet<String> = fsutil::list_names(&packs_dir)?.into_iter().collect();
        for n in &names {
            let debris = n.ends_with(".tmp")
                || n.strip_suffix(".pack")
                    .is_some_and(|id| !names.contains(&format!("{id}.pidx")));
            if debris {
                r.bytes_freed += remove_tree(&packs_dir.join(n))?;
                r.debris_files += 1;
            }
        }

        // 2. What the complete backups refer to. Any unreadable index stops gc: without it
        //    we cannot know what is garbage.
        let mut referenced: HashSet<ChunkHash> = HashSet::new();
        for m in self.list(None)? {
            for d in m.disks.iter().filter(|d| d.stored) {
                let idx = self.disk_index(&m, &d.info.name).map_err(|e| {
                    StoreError::Invalid(format!(
                        "gc stopped, nothing removed: cannot read what backup {} refers to: {e}",
                        m.id
                    ))
                })?;
                referenced.extend(idx.chunks.iter().filter(|h| !h.is_zero()));
            }
        }
        r.referenced_chunks = referenced.len() as u64;

        // 3. Walk the packs. The map's copy of a chunk is the one kept; others are garbage.
        self.bump_gc_generation()?;
        self.refresh()?;
        let packs_before = self.packs_size()?;
        let plans = {
            let map = self.inner.map.read().unwrap();
            r.missing_chunks = referenced.iter().filter(|h| !map.by_hash.contains_key(h)).count() as u64;
            let is_live = |pack_no: usize, e: &PackEntry| {
                referenced.contains(&e.hash)
                    && map
                        .by_hash
                        .get(&e.hash)
                        .is_some_and(|l| l.pack as usize == pack_no && l.entry.offset == e.offset)
            };
            let mut plans = Vec::new();
            for (no, id) in map.packs.iter().enumerate() {
                let idx = pack::read_pidx(&pack::pidx_path(&packs_dir, id))?;
                let total: u64 = idx.entries.iter().map(|e| e.record_len()).sum();
                let live: Vec<PackEntry> = idx.entries.iter().filter(|e| is_live(no, e)).copied().collect();
                let garbage = total - live.iter().map(|e| e.record_len()).sum::<u64>();
                plans.push((id.clone(), idx.entries.len() as u64, live, total, garbage));
            }
            plans
        };

        let mut out: Option<PackWriter> = None;
        let mut replaced: Vec<String> = Vec::new();
        for (id, count, live, total, garbage) in plans {
            if live.is_empty() {
                r.chunks_freed += count;
                self.remove_pack(&id)?;
                r.packs_deleted += 1;
            } else if garbage > 0 && garbage as f64 > opts.repack_threshold * total as f64 {
                if self.copy_live(&id, &live, &mut out)? {
                    r.chunks_freed += count - live.len() as u64;
                    r.packs_repacked += 1;
                    replaced.push(id);
                } else {
                    r.damaged_packs.push(id);
                }
            }
        }
        // New packs durable before the old ones go: a crash in between leaves duplicates,
        // which the next gc removes.
        if let Some(w) = out.take() {
            if !w.is_empty() {
                w.finish()?;
            }
        }
        for id in replaced {
            self.remove_pack(&id)?;
        }
        self.bump_gc_generation()?;
        self.refresh()?;
        r.bytes_freed += packs_before.saturating_sub(self.packs_size()?);
        Ok(r)
    }

    /// Deletes a pack: index first, so a crash leaves a pack without index (debris).
    fn remove_pack(&self, id: &str) -> Result<u64> {
        let dir = self.packs_dir();
        let n = remove_tree(&pack::pidx_path(&dir, id))? + remove_tree(&pack::pack_path(&dir, id))?;
        fsutil::fsync_dir(&dir)?;
        Ok(n)
    }

    /// Copies the live chunks of pack `id` into the output pack, checking each. False (and
    /// nothing counted) if one is damaged: the pack then stays as it is for verify to name.
    fn copy_live(&self, id: &str, live: &[PackEntry], out: &mut Option<PackWriter>) -> Result<bool> {
        let path = pack::pack_path(&self.packs_dir(), id);
        let f = File::open(&path).map_err(ctx(&path))?;
        let mut records = Vec::with_capacity(live.len());
        for e in live {
            let Ok(stored) = pack::read_record(&f, &path, e) else {
                return Ok(false);
            };
            if chunk::decode(&stored, e.enc, e.raw_len as usize, &e.hash).is_err() {
                return Ok(false);
            }
            records.push((e, stored));
        }
        for (e, stored) in records {
            if out.is_none() {
                *out = Some(PackWriter::create(&self.packs_dir())?);
            }
            let w = out.as_mut().unwrap();
            w.append(e.hash, e.enc, e.raw_len, &stored)?;
            if w.len() >= self.config().pack_target {
                out.take().unwrap().finish()?;
            }
        }
        Ok(true)
    }
}
