//! `Store`: opening and creating a store, the store-wide chunk lookup, listing, reading
//! manifests and disk indexes, deleting backups.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::chunk::{self, ChunkHash};
use crate::error::{ctx, Result, StoreError};
use crate::fsutil;
use crate::index::DiskIndex;
use crate::lock;
use crate::manifest::{self, Manifest};
use crate::pack::{self, PackEntry};

pub const STORE_VERSION: u32 = 1;

/// Settings fixed when the store is created (`store.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Chunk size in bytes: a power of two from 4 KiB to 4 MiB, matching the dirty-bitmap
    /// granularity of the disks backed up into it.
    pub chunk_size: u32,
    /// zstd level for new chunks (-7..=-1 fast, 1..=22).
    pub zstd_level: i32,
    /// A writer starts a new pack file once its current one reaches this size.
    pub pack_target: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunk_size: 64 * 1024,
            zstd_level: 1,
            pack_target: 64 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<()> {
        let cs = self.chunk_size;
        if !cs.is_power_of_two() || !(4096..=4 * 1024 * 1024).contains(&cs) {
            return Err(StoreError::Invalid(format!(
                "chunk size {cs} must be a power of two from 4 KiB to 4 MiB"
            )));
        }
        check_zstd_level(self.zstd_level)?;
        if self.pack_target < cs as u64 {
            return Err(StoreError::Invalid("pack target is smaller than a chunk".into()));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    format_version: u32,
    #[serde(flatten)]
    config: StoreConfig,
}

/// Where a chunk lives: pack number (into `ChunkMap::packs`) and its entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loc {
    pub pack: u32,
    pub entry: PackEntry,
}

/// The store-wide lookup hash → (pack, offset), rebuilt from the `.pidx` files at open and
/// topped up whenever a writer begins. When a chunk is in two packs (two writers stored it
/// at the same time), the pack loaded first wins and gc drops the other copy.
#[derive(Default)]
pub(crate) struct ChunkMap {
    pub packs: Vec<String>,
    pub by_hash: HashMap<ChunkHash, Loc>,
    loaded: HashSet<String>,
    gc_generation: u64,
}

impl ChunkMap {
    pub fn add_pack(&mut self, id: &str, entries: &[PackEntry]) {
        if !self.loaded.insert(id.to_string()) {
            return;
        }
        let n = self.packs.len() as u32;
        self.packs.push(id.to_string());
        for e in entries {
            self.by_hash.entry(e.hash).or_insert(Loc { pack: n, entry: *e });
        }
    }
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub config: StoreConfig,
    pub map: RwLock<ChunkMap>,
}

/// A backup store. Cheap to clone (shared state); safe to use from several threads.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Creates a store in `path` (created if missing; must be empty otherwise).
    pub fn init(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let root = path.as_ref();
        config.validate()?;
        if root.join("store.json").exists() {
            return Err(StoreError::AlreadyExists {
                path: root.to_path_buf(),
            });
        }
        fs::create_dir_all(root).map_err(ctx(root))?;
        if !fsutil::list_names(root)?.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{} is not empty; a store needs a directory of its own",
                root.display()
            )));
        }
        for d in ["packs", "backups", "tmp"] {
            fs::create_dir(root.join(d)).map_err(ctx(root.join(d)))?;
        }
        let file = StoreFile {
            format_version: STORE_VERSION,
            config,
        };
        let json = serde_json::to_vec_pretty(&file).expect("store config serializes");
        // store.json last: until it exists this is not a store.
        fsutil::write_atomic(&root.join("store.json"), &json)?;
        fsutil::fsync_dir(root)?;
        Store::open(root)
    }

    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let root = path.as_ref().to_path_buf();
        let sj = root.join("store.json");
        let bytes = match fs::read(&sj) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotAStore { path: root }),
            Err(e) => return Err(StoreError::io(&sj, e)),
        };
        #[derive(Deserialize)]
        struct V {
            format_version: u32,
        }
        let v: V = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt(&sj, format!("not valid store settings ({e})")))?;
        if v.format_version != STORE_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: sj,
                found: v.format_version,
                supported: STORE_VERSION,
            });
        }
        let file: StoreFile = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt(&sj, format!("not valid store settings ({e})")))?;
        file.config
            .validate()
            .map_err(|e| StoreError::corrupt(&sj, e.to_string()))?;
        let store = Store {
            inner: Arc::new(Inner {
                root,
                config: file.config,
                map: RwLock::new(ChunkMap::default()),
            }),
        };
        let _l = lock::shared(store.root())?;
        store.refresh()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub(crate) fn packs_dir(&self) -> PathBuf {
        self.inner.root.join("packs")
    }

    pub(crate) fn backups_dir(&self) -> PathBuf {
        self.inner.root.join("backups")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    fn gc_generation(&self) -> Result<u64> {
        let p = self.inner.root.join("gc-generation");
        match fs::read_to_string(&p) {
            Ok(s) => s.trim().parse().map_err(|_| StoreError::corrupt(&p, "not a number")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(&p, e)),
        }
    }

    pub(crate) fn bump_gc_generation(&self) -> Result<()> {
        let g = self.gc_generation()? + 1;
        fsutil::write_atomic(&self.inner.root.join("gc-generation"), g.to_string().as_bytes())
    }

    /// Brings the chunk map up to date; call with the store lock held. After a gc (seen by
    /// its generation counter) the map is rebuilt, since packs may be gone; otherwise only
    /// packs finished since the last look are added.
    pub(crate) fn refresh(&self) -> Result<()> {
        let gen = self.gc_generation()?;
        let names = fsutil::list_names(&self.packs_dir())?;
        let mut map = self.inner.map.write().unwrap();
        if map.gc_generation != gen {
            *map = ChunkMap {
                gc_generation: gen,
                ..ChunkMap::default()
            };
        }
        for n in names {
            let Some(id) = n.strip_suffix(".pidx") else {
                continue;
            };
            if map.loaded.contains(id) {
                continue;
            }
            let idx = pack::read_pidx(&self.packs_dir().join(&n))?;
            map.add_pack(id, &idx.entries);
        }
        Ok(())
    }

    pub(crate) fn lookup(&self, h: &ChunkHash) -> Option<(String, PackEntry)> {
        let map = self.inner.map.read().unwrap();
        map.by_hash
            .get(h)
            .map(|l| (map.packs[l.pack as usize].clone(), l.entry))
    }

    pub(crate) fn contains(&self, h: &ChunkHash) -> bool {
        self.inner.map.read().unwrap().by_hash.contains_key(h)
    }

    /// Number of distinct chunks in the store's packs.
    pub fn chunk_count(&self) -> usize {
        self.inner.map.read().unwrap().by_hash.len()
    }

    /// Total size of the pack files (what the chunks take on disk).
    pub fn packs_size(&self) -> Result<u64> {
        let dir = self.packs_dir();
        let mut n = 0;
        for name in fsutil::list_names(&dir)? {
            n += fs::metadata(dir.join(&name)).map_err(ctx(dir.join(&name)))?.len();
        }
        Ok(n)
    }

    /// Complete backups, oldest first, of one VM or of all.
    pub fn list(&self, vm: Option<&str>) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for id in fsutil::list_names(&self.backups_dir())? {
            if !manifest::is_valid_id(&id) {
                continue;
            }
            let m = self.manifest(&id)?;
            if vm.is_none_or(|v| v == m.vm) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| (&a.time, &a.id).cmp(&(&b.time, &b.id)));
        Ok(out)
    }

    /// The ids of the complete backups in the store at `root`, unsorted, without opening it
    /// (no pack indexes read, no lock taken): for monitoring, which looks often and needs only
    /// manifests. A backup is complete once its directory is there (one rename publishes it);
    /// one deleted meanwhile may be listed and then be gone.
    pub fn peek_backup_ids(root: &Path) -> Result<Vec<String>> {
        let mut ids = fsutil::list_names(&root.join("backups"))?;
        ids.retain(|id| manifest::is_valid_id(id));
        Ok(ids)
    }

    /// One backup's manifest from the store at `root`, without opening it (see
    /// [`Store::peek_backup_ids`]).
    pub fn peek_manifest(root: &Path, id: &str) -> Result<Manifest> {
        if !manifest::is_valid_id(id) {
            return Err(StoreError::BackupNotFound(id.to_string()));
        }
        let p = root.join("backups").join(id).join("manifest.json");
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::BackupNotFound(id.to_string()))
            }
            Err(e) => return Err(StoreError::io(&p, e)),
        };
        let m = Manifest::decode(&p, &bytes)?;
        if m.id != id {
            return Err(StoreError::corrupt(&p, format!("says it is backup {}", m.id)));
        }
        Ok(m)
    }

    pub(crate) fn backup_dir(&self, id: &str) -> Result<PathBuf> {
        if !manifest::is_valid_id(id) {
            return Err(StoreError::BackupNotFound(id.to_string()));
        }
        let d = self.backups_dir().join(id);
        if !d.is_dir() {
            return Err(StoreError::BackupNotFound(id.to_string()));
        }
        Ok(d)
    }

    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        let p = self.backup_dir(id)?.join("manifest.json");
        let m = Manifest::decode(&p, &fsutil::read(&p)?)?;
        if m.id != id {
            return Err(StoreError::corrupt(&p, format!("says it is backup {}", m.id)));
        }
        Ok(m)
    }

    /// The disk index of a stored disk of a backup.
    pub fn disk_index(&self, m: &Manifest, disk: &str) -> Result<DiskIndex> {
        let d = m.disk(disk).ok_or_else(|| StoreError::DiskNotFound {
            id: m.id.clone(),
            disk: disk.to_string(),
        })?;
        let Some(file) = d.index.as_deref().filter(|_| d.stored) else {
            return Err(StoreError::Invalid(format!(
                "backup {}: disk {disk:?} is not stored (skeleton)",
                m.id
            )));
        };
        if file.contains('/') || file.starts_with('.') {
            return Err(StoreError::corrupt(
                self.backups_dir().join(&m.id).join("manifest.json"),
                format!("index file name {file:?} is not a plain file name"),
            ));
        }
        let p = self.backup_dir(&m.id)?.join(file);
        let idx = DiskIndex::load(&p)?;
        if idx.disk_size != d.info.size {
            return Err(StoreError::corrupt(
                &p,
                format!("covers {} bytes, the manifest says {}", idx.disk_size, d.info.size),
            ));
        }
        Ok(idx)
    }

    /// Removes a backup. Its chunks stay until gc; other backups never depend on it (every
    /// disk index is complete), so deleting a parent leaves its incrementals restorable.
    pub fn delete(&self, id: &str) -> Result<()> {
        let _l = lock::shared(self.root())?;
        self.delete_locked(id)
    }

    pub(crate) fn delete_locked(&self, id: &str) -> Result<()> {
        let dir = self.backup_dir(id)?;
        let trash = self.tmp_dir().join(format!("deleted-{id}"));
        fs::rename(&dir, &trash).map_err(ctx(&dir))?;
        fsutil::fsync_dir(&self.backups_dir())?;
        fs::remove_dir_all(&trash).map_err(ctx(&trash))
    }

    /// Reads a chunk and checks it against its hash. Errors are descriptions for
    /// [`StoreError::BadChunk`].
    pub(crate) fn read_chunk(&self, files: &mut PackFiles, h: &ChunkHash) -> Result<Vec<u8>, String> {
        let (pack_id, e) = self
            .lookup(h)
            .ok_or_else(|| "is missing (no pack in the store holds it)".to_string())?;
        let path = pack::pack_path(&self.packs_dir(), &pack_id);
        let f = files.get(&path)?;
        let stored = pack::read_record(f, &path, &e)?;
        chunk::decode(&stored, e.enc, e.raw_len as usize, h).map_err(|p| format!("{p} (in {})", path.display()))
    }
}

/// Open pack files of one reader.
#[derive(Default)]
pub(crate) struct PackFiles {
    files: HashMap<PathBuf, File>,
}

impl PackFiles {
    pub fn get(&mut self, path: &Path) -> Result<&File, String> {
        if !self.files.contains_key(path) {
            let f = File::open(path)
                .map_err(|e| format!("is missing: its pack {} cannot be opened ({e})", path.display()))?;
            self.files.insert(path.to_path_buf(), f);
        }
        Ok(&self.files[path])
    }
}

/// zstd's levels: 1 (fast) to 22 (small), and the faster negative levels down to -7.
pub(crate) fn check_zstd_level(level: i32) -> Result<()> {
    if level == 0 || !(-7..=22).contains(&level) {
        return Err(StoreError::Invalid(format!(
            "zstd level {level} must be 1..=22, or -7..=-1 for zstd's fast levels"
        )));
    }
    Ok(())
}
