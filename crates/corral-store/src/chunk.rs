//! Chunks: identity (BLAKE3 of the uncompressed bytes), zero detection, compression.

use std::fmt;

/// BLAKE3 of a chunk's uncompressed content. The all-zero value is reserved for
/// [`ChunkHash::ZERO`], the marker of an all-zero chunk that is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// The disk-index marker for "this chunk is all zeros".
    pub const ZERO: ChunkHash = ChunkHash([0; 32]);

    pub fn of(data: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            f.write_str("ZERO")
        } else {
            f.write_str(&self.to_hex())
        }
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({self})")
    }
}

/// True if every byte is zero (16 bytes at a time; this runs on every chunk read).
pub fn is_all_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(16);
    words.by_ref().all(|w| u128::from_ne_bytes(w.try_into().unwrap()) == 0) && words.remainder().iter().all(|&b| b == 0)
}

/// How a chunk's bytes are kept in a pack record (the record's `flags` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Stored as is: zstd did not make it smaller (random data).
    Raw = 0,
    Zstd = 1,
}

impl Encoding {
    pub fn from_flags(flags: u8) -> Option<Encoding> {
        match flags {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

thread_local! {
    /// One compression context per thread and level: making a context for every chunk
    /// (`zstd::bulk::compress`) cost more than compressing a random chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// One decompression context per thread, for the same reason.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Bytes of a chunk compressed first to tell random data (encrypted, already compressed)
/// from data worth compressing.
const PROBE: usize = 4096;

/// Compresses a chunk; keeps it raw when compression would not save anything. A chunk whose
/// first 4 KiB do not shrink by 2% is kept raw without compressing the rest: on disk images
/// that is random or already-compressed data, and zstd's pass over it was a fifth of a
/// backup's CPU time.
pub fn encode(data: &[u8], level: i32) -> (Encoding, Vec<u8>) {
    let compressed = COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let c = &mut slot.as_mut()?.1;
        if data.len() > 4 * PROBE {
            let probe = c.compress(&data[..PROBE]).ok()?;
            if probe.len() * 50 > PROBE * 49 {
                return None;
            }
        }
        c.compress(data).ok()
    });
    match compressed {
        Some(c) if c.len() < data.len() => (Encoding::Zstd, c),
        _ => (Encoding::Raw, data.to_vec()),
    }
}

/// Turns stored bytes back into the chunk and checks them against `expected`.
/// Errors are plain descriptions; the caller adds backup, disk and offset.
pub fn decode(stored: &[u8], enc: Encoding, raw_len: usize, expected: &ChunkHash) -> Result<Vec<u8>, String> {
    let data = match enc {
        Encoding::Raw => stored.to_vec(),
        Encoding::Zstd => DECOMPRESSOR
            .with(|d| match d.borrow_mut().as_mut() {
                Some(d) => d.decompress(stored, raw_len),
                None => zstd::bulk::decompress(stored, raw_len),
            })
            .map_err(|e| format!("does not decompress ({e})"))?,
    };
    if data.len() != raw_len {
        return Err(format!("has {} bytes, its index says {raw_len}", data.len()));
    }
    let got = ChunkHash::of(&data);
    if got != *expected {
        return Err(format!("content does not match its hash (content hashes to {got})"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[0; 65536]));
        assert!(is_all_zero(&[0; 13]));
        assert!(is_all_zero(&[]));
        let mut d = vec![0u8; 65536];
        d[65535] = 1;
        assert!(!is_all_zero(&d));
        d[65535] = 0;
        d[3] = 1;
        assert!(!is_all_zero(&d));
        assert!(!is_all_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 7]));
    }

    #[test]
    fn roundtrip_and_hash_check() {
        let text: Vec<u8> = b"hello corral ".iter().cycle().take(65536).copied().collect();
        let h = ChunkHash::of(&text);
        let (enc, stored) = encode(&text, 3);
        assert_eq!(enc, Encoding::Zstd);
        assert!(stored.len() < 1000);
        assert_eq!(decode(&stored, enc, text.len(), &h).unwrap(), text);
        let other = ChunkHash::of(b"x");
        assert!(decode(&stored, enc, text.len(), &other)
            .unwrap_err()
            .contains("does not match"));
    }

    #[test]
    fn random_data_stays_raw() {
        let data: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut x = 0x12345678u64;
        let data: Vec<u8> = data
            .iter()
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (enc, stored) = encode(&data, 3);
        assert_eq!(enc, Encoding::Raw);
        assert_eq!(stored, data);
    }
}
