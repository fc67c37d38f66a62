//! Durable-write helpers: every file the store publishes is fsynced before the rename that
//! makes it visible, and the directory is fsynced after.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{ctx, Result};

/// Fsyncs a directory so that renames and creations in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(ctx(dir))
}

/// Writes `bytes` to `path` (which must not exist) and fsyncs it; no rename.
pub fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ctx(path))?;
    f.write_all(bytes).map_err(ctx(path))?;
    f.sync_all().map_err(ctx(path))
}

/// Writes `path` atomically: `path.tmp`, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let _ = fs::remove_file(&tmp);
    write_new_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(ctx(path))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(ctx(path))
}

/// Directory entries' file names (UTF-8 ones only; the store writes no others). A missing
/// directory reads as empty.
pub fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ctx(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(ctx(dir))?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Little-endian field reader over a byte slice that reports truncation instead of panicking.
pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
}

/// Splits `bytes` into body and 32-byte BLAKE3 trailer and checks the trailer.
pub fn check_trailer(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    (blake3::hash(body).as_bytes() == sum).then_some(body)
}

pub fn push_trailer(buf: &mut Vec<u8>) {
    let sum = *blake3::hash(buf).as_bytes();
    buf.extend_from_slice(&sum);
}
