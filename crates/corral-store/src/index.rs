//! Disk indexes (`backups/ID/disk-N.didx`): one chunk reference per chunk-size slot of the
//! disk, in offset order; [`ChunkHash::ZERO`] marks an all-zero chunk. Every index is
//! complete (an incremental's index is its parent's with the changed slots replaced), so a
//! restore never needs the parent.

use std::path::Path;

use crate::chunk::ChunkHash;
use crate::error::{Result, StoreError};
use crate::fsutil::{self, Cursor};

pub const DIDX_MAGIC: &[u8; 8] = b"CRLDIDX\0";
pub const DIDX_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskIndex {
    pub disk_size: u64,
    pub chunk_size: u32,
    pub chunks: Vec<ChunkHash>,
}

/// Number of chunk slots for a disk (the last one may be short).
pub fn slot_count(disk_size: u64, chunk_size: u32) -> u64 {
    disk_size.div_ceil(chunk_size as u64)
}

impl DiskIndex {
    /// Length of the chunk at slot `i` (the last slot may be shorter than `chunk_size`).
    pub fn chunk_len(&self, i: usize) -> usize {
        let start = i as u64 * self.chunk_size as u64;
        (self.disk_size - start).min(self.chunk_size as u64) as usize
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.chunks.len() * 32);
        for h in &self.chunks {
            body.extend_from_slice(&h.0);
        }
        // Sparse disks are long runs of ZERO: zstd makes those indexes tiny.
        let packed = zstd::bulk::compress(&body, 3).expect("zstd of an in-memory buffer");
        let mut buf = Vec::with_capacity(packed.len() + 72);
        buf.extend_from_slice(DIDX_MAGIC);
        buf.extend_from_slice(&DIDX_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.chunk_size.to_le_bytes());
        buf.extend_from_slice(&self.disk_size.to_le_bytes());
        buf.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(packed.len() as u64).to_le_bytes());
        buf.extend_from_slice(&packed);
        fsutil::push_trailer(&mut buf);
        buf
    }

    pub fn decode(path: &Path, bytes: &[u8]) -> Result<DiskIndex> {
        if bytes.len() < 8 || &bytes[..8] != DIDX_MAGIC {
            return Err(StoreError::corrupt(path, "bad magic (not a corral disk index)"));
        }
        let body = fsutil::check_trailer(bytes)
            .ok_or_else(|| StoreError::corrupt(path, "checksum mismatch (truncated or modified disk index)"))?;
        let bad = || StoreError::corrupt(path, "truncated disk index");
        let mut c = Cursor::new(body);
        c.pos = 8;
        let version = c.u32().ok_or_else(bad)?;
        if version != DIDX_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: DIDX_VERSION,
            });
        }
        let chunk_size = c.u32().ok_or_else(bad)?;
        let disk_size = c.u64().ok_or_else(bad)?;
        let count = c.u64().ok_or_else(bad)?;
        let packed_len = c.u64().ok_or_else(bad)?;
        let packed = c.take(packed_len as usize).ok_or_else(bad)?;
        if chunk_size == 0 || count != slot_count(disk_size, chunk_size) {
            return Err(StoreError::corrupt(
                path,
                "chunk count does not match disk and chunk size",
            ));
        }
        let body = zstd::bulk::decompress(packed, count as usize * 32)
            .map_err(|e| StoreError::corrupt(path, format!("entries do not decompress: {e}")))?;
        if body.len() as u64 != count * 32 {
            return Err(bad());
        }
        let chunks = body
            .chunks_exact(32)
            .map(|c| ChunkHash(c.try_into().unwrap()))
            .collect();
        Ok(DiskIndex {
            disk_size,
            chunk_size,
            chunks,
        })
    }

    pub fn load(path: &Path) -> Result<DiskIndex> {
        DiskIndex::decode(path, &fsutil::read(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_short_last_chunk() {
        let idx = DiskIndex {
            disk_size: 3 * 65536 + 100,
            chunk_size: 65536,
            chunks: vec![
                ChunkHash::of(b"a"),
                ChunkHash::ZERO,
                ChunkHash::ZERO,
                ChunkHash::of(b"b"),
            ],
        };
        let b = idx.encode();
        assert_eq!(DiskIndex::decode(Path::new("x"), &b).unwrap(), idx);
        assert_eq!(idx.chunk_len(0), 65536);
        assert_eq!(idx.chunk_len(3), 100);
    }

    #[test]
    fn damage_is_detected() {
        let idx = DiskIndex {
            disk_size: 65536,
            chunk_size: 65536,
            chunks: vec![ChunkHash::of(b"a")],
        };
        let mut b = idx.encode();
        let n = b.len();
        b[n - 40] ^= 0xff;
        let e = DiskIndex::decode(Path::new("/s/d.didx"), &b).unwrap_err().to_string();
        assert!(e.contains("/s/d.didx") && e.contains("checksum"), "{e}");
        let mut b = idx.encode();
        b[8] = 9;
        let n = b.len();
        b.truncate(n - 32);
        crate::fsutil::push_trailer(&mut b);
        let e = DiskIndex::decode(Path::new("d"), &b).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
