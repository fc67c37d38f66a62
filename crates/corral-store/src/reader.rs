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

impl Iterator for DiskReader {
    type Item = Result<RestoredChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.pos;
        let h: ChunkHash = *self.index.chunks.get(i)?;
        self.pos += 1;
        let offset = i as u64 * self.index.chunk_size as u64;
        let len = self.index.chunk_len(i);
        if h.is_zero() {
            return Some(Ok(RestoredChunk {
                offset,
                data: vec![0; len],
                zero: true,
            }));
        }
        let res = self
            .store
            .read_chunk(&mut self.files, &h)
            .and_then(|d| {
                if d.len() == len {
                    Ok(d)
                } else {
                    Err(format!("has {} bytes where the disk needs {len}", d.len()))
                }
            })
            .map(|data| RestoredChunk {
                offset,
                data,
                zero: false,
            })
            .map_err(|problem| StoreError::BadChunk {
                id: self.id.clone(),
                disk: self.disk.clone(),
                offset,
                hash: h,
                problem,
            });
        if res.is_err() {
            // Loud and final: no further chunks after a bad one.
            self.pos = self.index.chunks.len();
        }
        Some(res)
    }
}
