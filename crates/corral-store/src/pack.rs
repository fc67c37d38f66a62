//! Pack files (`packs/ID.pack`) and their indexes (`packs/ID.pidx`).
//!
//! A pack is a header followed by chunk records, each carrying its own hash and lengths, so
//! a pack describes itself. Its `.pidx` (hash → offset, lengths) is written only after the
//! pack is complete and fsynced: a pack without a `.pidx` is debris of a writer that died and
//! is never read. Layouts: docs/store-format.md.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chunk::{ChunkHash, Encoding};
use crate::error::{ctx, Result, StoreError};
use crate::fsutil::{self, Cursor};

pub const PACK_MAGIC: &[u8; 8] = b"CRLPACK\0";
pub const PIDX_MAGIC: &[u8; 8] = b"CRLPIDX\0";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = 44;

/// Where one chunk lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub hash: ChunkHash,
    /// Offset of the record header in the pack file.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub enc: Encoding,
}

impl PackEntry {
    /// Record header + stored bytes: what this chunk occupies in its pack.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN + self.stored_len as u64
    }
}

pub fn pack_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.pack"))
}

pub fn pidx_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.pidx"))
}

/// A fresh random pack name: writers never share a pack file.
pub fn new_pack_id() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// Appends records to one new pack. Dropped without [`PackWriter::finish`], it removes its
/// file.
pub struct PackWriter {
    id: String,
    dir: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    len: u64,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn create(dir: &Path) -> Result<PackWriter> {
        let id = new_pack_id();
        let path = pack_path(dir, &id);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(ctx(&path))?;
        let mut w = PackWriter {
            id,
            dir: dir.to_path_buf(),
            path,
            file: Some(BufWriter::with_capacity(1 << 20, f)),
            len: 0,
            entries: Vec::new(),
        };
        let mut hdr = Vec::with_capacity(PACK_HEADER_LEN as usize);
        hdr.extend_from_slice(PACK_MAGIC);
        hdr.extend_from_slice(&PACK_VERSION.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        w.write(&hdr)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("pack writer used after finish");
        f.write_all(bytes).map_err(ctx(&self.path))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn append(&mut self, hash: ChunkHash, enc: Encoding, raw_len: u32, stored: &[u8]) -> Result<PackEntry> {
        let entry = PackEntry {
            hash,
            offset: self.len,
            stored_len: u32::try_from(stored.len()).map_err(|_| StoreError::Invalid("chunk too large".into()))?,
            raw_len,
            enc,
        };
        let mut hdr = [0u8; RECORD_HEADER_LEN as usize];
        hdr[..32].copy_from_slice(&hash.0);
        hdr[32..36].copy_from_slice(&raw_len.to_le_bytes());
        hdr[36..40].copy_from_slice(&entry.stored_len.to_le_bytes());
        hdr[40] = enc as u8;
        self.write(&hdr)?;
        self.write(stored)?;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Makes the pack durable and readable: flush + fsync the pack, then write its index
    /// under a temporary name, fsync, rename into place and fsync the directory.
    pub fn finish(mut self) -> Result<(String, Vec<PackEntry>)> {
        let f = self.file.take().expect("pack finished twice");
        let f = f.into_inner().map_err(|e| StoreError::io(&self.path, e.into_error()))?;
        f.sync_all().map_err(ctx(&self.path))?;
        drop(f);

        let mut buf = Vec::with_capacity(32 + self.entries.len() * 52 + 32);
        buf.extend_from_slice(PIDX_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&self.len.to_le_bytes());
        buf.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            buf.extend_from_slice(&e.hash.0);
            buf.extend_from_slice(&e.offset.to_le_bytes());
            buf.extend_from_slice(&e.stored_len.to_le_bytes());
            buf.extend_from_slice(&e.raw_len.to_le_bytes());
            buf.extend_from_slice(&[e.enc as u8, 0, 0, 0]);
        }
        fsutil::push_trailer(&mut buf);
        let res = fsutil::write_atomic(&pidx_path(&self.dir, &self.id), &buf);
        if let Err(e) = res {
            let _ = fs::remove_file(&self.path);
            self.entries.clear();
            return Err(e);
        }
        let entries = std::mem::take(&mut self.entries);
        // Published: Drop must not remove it now.
        self.path = PathBuf::new();
        Ok((std::mem::take(&mut self.id), entries))
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A loaded pack index.
#[allow(dead_code)] // pack_len: checked in tests; part of the format for tools
pub struct PackIndex {
    /// Pack length when it was finished; a shorter pack file is truncated (readers find
    /// that per chunk and name the pack).
    pub pack_len: u64,
    pub entries: Vec<PackEntry>,
}

pub fn read_pidx(path: &Path) -> Result<PackIndex> {
    let bytes = fsutil::read(path)?;
    if bytes.len() < 8 || &bytes[..8] != PIDX_MAGIC {
        return Err(StoreError::corrupt(path, "bad magic (not a corral pack index)"));
    }
    let body = fsutil::check_trailer(&bytes)
        .ok_or_else(|| StoreError::corrupt(path, "checksum mismatch (truncated or modified pack index)"))?;
    let mut c = Cursor::new(body);
    c.pos = 8;
    let bad = || StoreError::corrupt(path, "truncated pack index");
    let version = c.u32().ok_or_else(bad)?;
    if version != PACK_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: PACK_VERSION,
        });
    }
    c.u32().ok_or_else(bad)?;
    let pack_len = c.u64().ok_or_else(bad)?;
    let count = c.u64().ok_or_else(bad)?;
    if count.saturating_mul(52) != (body.len() - c.pos) as u64 {
        return Err(StoreError::corrupt(path, "entry count does not match its size"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let hash = ChunkHash(c.hash().ok_or_else(bad)?);
        let offset = c.u64().ok_or_else(bad)?;
        let stored_len = c.u32().ok_or_else(bad)?;
        let raw_len = c.u32().ok_or_else(bad)?;
        let flags = c.take(4).ok_or_else(bad)?[0];
        let enc = Encoding::from_flags(flags)
            .ok_or_else(|| StoreError::corrupt(path, format!("unknown chunk encoding {flags}")))?;
        entries.push(PackEntry {
            hash,
            offset,
            stored_len,
            raw_len,
            enc,
        });
    }
    Ok(PackIndex { pack_len, entries })
}

/// Reads one record's stored bytes, checking its header against the index entry. Errors
/// are descriptions for [`StoreError::BadChunk`].
pub fn read_record(file: &File, pack: &Path, e: &PackEntry) -> Result<Vec<u8>, String> {
    let mut hdr = [0u8; RECORD_HEADER_LEN as usize];
    let mut stored = vec![0u8; e.stored_len as usize];
    let read = file
        .read_exact_at(&mut hdr, e.offset)
        .and_then(|_| file.read_exact_at(&mut stored, e.offset + RECORD_HEADER_LEN));
    match read {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(format!(
                "is missing: pack {} is truncated (it ends before offset {})",
                pack.display(),
                e.offset + e.record_len()
            ))
        }
        Err(err) => return Err(format!("could not be read from {}: {err}", pack.display())),
    }
    let mut c = Cursor::new(&hdr);
    let h = c.hash().unwrap_or_default();
    let raw = c.u32().unwrap_or_default();
    let st = c.u32().unwrap_or_default();
    if h != e.hash.0 || raw != e.raw_len || st != e.stored_len || hdr[40] != e.enc as u8 {
        return Err(format!(
            "record header at {} offset {} does not match the pack index (damaged pack)",
            pack.display(),
            e.offset
        ));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk;

    #[test]
    fn write_index_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let data = vec![7u8; 5000];
        let h = ChunkHash::of(&data);
        let (enc, stored) = chunk::encode(&data, 3);
        let e = w.append(h, enc, 5000, &stored).unwrap();
        assert_eq!(e.offset, PACK_HEADER_LEN);
        let (id, entries) = w.finish().unwrap();
        let idx = read_pidx(&pidx_path(dir.path(), &id)).unwrap();
        assert_eq!(idx.entries, entries);
        let f = File::open(pack_path(dir.path(), &id)).unwrap();
        assert_eq!(idx.pack_len, f.metadata().unwrap().len());
        let s = read_record(&f, Path::new("p"), &idx.entries[0]).unwrap();
        assert_eq!(chunk::decode(&s, enc, 5000, &h).unwrap(), data);
    }

    #[test]
    fn dropped_writer_removes_its_pack() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        w.append(ChunkHash::of(b"a"), Encoding::Raw, 1, b"a").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_pidx_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        w.append(ChunkHash::of(b"a"), Encoding::Raw, 1, b"a").unwrap();
        let (id, _) = w.finish().unwrap();
        let p = pidx_path(dir.path(), &id);
        let mut b = fs::read(&p).unwrap();
        b[40] ^= 1;
        fs::write(&p, &b).unwrap();
        let msg = read_pidx(&p).err().unwrap().to_string();
        assert!(msg.contains(&id) && msg.contains("checksum"), "{msg}");
        fs::write(&p, b"garbage").unwrap();
        let msg = read_pidx(&p).err().unwrap().to_string();
        assert!(msg.contains("bad magic"), "{msg}");
    }
}
