//! Restoring: a disk's chunks in offset order, each checked against its hash as it is read.

use std::io::{Seek, SeekFrom, Write};

use crate::chunk::ChunkHash;
use crate::error::{Result, StoreError};
use crate::index::DiskIndex;
use crate::lock::{self, StoreLock};
use crate::store::{PackFiles, Store};

/// One chunk of a restored disk.
#[derive(Debug)]
pub struct RestoredChunk {
    pub offset: u64,
    pub data: Vec<u8>,
    /// All zeros (a ZERO entry): a sparse restore may skip writing it.
    pub zero: bool,
}

/// Iterates one disk of one backup. Holds the store lock shared, so gc waits for it.
pub struct DiskReader {
    store: Store,
    _lock: StoreLock,
    id: String,
    disk: String,
    index: DiskIndex,
    files: PackFiles,
    pos: usize,
}

impl Store {
    pub fn read_disk(&self, id: &str, disk: &str) -> Result<DiskReader> {
        let lock = lock::shared(self.root())?;
        self.refresh()?;
        let m = self.manifest(id)?;
        let index = self.disk_index(&m, disk)?;
        Ok(DiskReader {
            store: self.clone(),
            _lock: lock,
            id: id.to_string(),
            disk: disk.to_string(),
            index,
            files: PackFiles::default(),
            pos: 0,
        })
    }
}

impl DiskReader {
    pub fn index(&self) -> &DiskIndex {
        &self.index
    }

    /// Writes the whole disk to `out` (seeking over zero chunks, so a file stays sparse);
    /// returns the bytes restored. Stops at the first bad chunk.
    pub fn restore_to<W: Write + Seek>(self, out: &mut W) -> Result<u64> {
        let size = self.index.disk_size;
        let io = |e| StoreError::io("restore target", e);
        for c in self {
            let c = c?;
            if c.zero {
                out.seek(SeekFrom::Start(c.offset + c.data.len() as u64)).map_err(io)?;
            } else {
                out.seek(SeekFrom::Start(c.offset)).map_err(io)?;
                out.write_all(&c.data).map_err(io)?;
            }
        }
        out.flush().map_err(io)?;
        Ok(size)
    }
}

/// A stretch of a restored disk: `len` bytes at `offset` that are all zero (`data` empty) or
/// that hold `data`.
#[derive(Debug)]
pub struct RestoredRun {
    pub offset: u64,
    pub len: u64,
    /// Empty for a zero run.
    pub data: Vec<u8>,
}

impl RestoredRun {
    pub fn is_zero(&self) -> bool {
        self.data.is_empty()
    }
}

impl DiskReader {
    /// Decodes and checks the disk on `threads` threads and hands it to `sink` as runs of
    /// up to `run_bytes` (data runs) in no particular order; consecutive zero chunks come
    /// as one zero run each. Every chunk is checked against its hash before it is handed
    /// on. Stops at the first bad chunk (its error is returned) or when `sink` returns
    /// false (then `Ok(false)`).
    pub fn restore_runs(
        self,
        threads: usize,
        run_bytes: usize,
        sink: impl Fn(RestoredRun) -> bool + Sync,
    ) -> Result<bool> {
        let cs = self.index.chunk_size as usize;
        let per_run = (run_bytes / cs).max(1);
        // Work items: ranges of chunk numbers, all zero or all data.
        let mut items: Vec<(usize, usize, bool)> = vec![];
        for (i, h) in self.index.chunks.iter().enumerate() {
            let zero = h.is_zero();
            match items.last_mut() {
                Some((start, end, z)) if *z == zero && *end == i && (zero || i - *start < per_run) => *end = i + 1,
                _ => items.push((i, i + 1, zero)),
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let failed: std::sync::Mutex<Option<StoreError>> = std::sync::Mutex::new(None);
        let work = || {
            let mut files = PackFiles::default();
            loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(start, end, zero)) = items.get(k) else {
                    return;
                };
                let offset = start as u64 * cs as u64;
                let len: u64 = (start..end).map(|i| self.index.chunk_len(i) as u64).sum();
                let mut data = Vec::new();
                if !zero {
                    data.reserve(len as usize);
                    for i in start..end {
                        match self.checked_chunk(&mut files, i) {
                            Ok(d) => data.extend_from_slice(&d),
                            Err(e) => {
                                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                                failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                                return;
                            }
                        }
                    }
                }
                if !sink(RestoredRun { offset, len, data }) {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(work);
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(!stop.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Chunk `i`, read, decoded and checked against its hash.
    fn checked_chunk(&self, files: &mut PackFiles, i: usize) -> Result<Vec<u8>> {
        let h = self.index.chunks[i];
        let offset = i as u64 * self.index.chunk_size as u64;
        let len = self.index.chunk_len(i);
        self.store
            .read_chunk(files, &h)
            .and_then(|d| {
                if d.len() == len {
                    Ok(d)
                } else {
                    Err(format!("has {} bytes where the disk needs {len}", d.len()))
                }
            })
            .map_err(|problem| StoreError::BadChunk {
                id: self.id.clone(),
                disk: self.disk.clone(),
                offset,
                hash: h,
                problem,
            })
    }
}

impl Iterator for DiskReader {
    type Item = Result<RestoredChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.pos;
        let h: ChunkHash = *self.index.chunks.get(i)?;
        self.pos += 1;
        let offset = i as u64 * self.index.chunk_size as u64;
        if h.is_zero() {
            let len = self.index.chunk_len(i);
            return Some(Ok(RestoredChunk {
                offset,
                data: vec![0; len],
                zero: true,
            }));
        }
        let mut files = std::mem::take(&mut self.files);
        let res = self.checked_chunk(&mut files, i).map(|data| RestoredChunk {
            offset,
            data,
            zero: false,
        });
        self.files = files;
        if res.is_err() {
            // Loud and final: no further chunks after a bad one.
            self.pos = self.index.chunks.len();
        }
        Some(res)
    }
}
