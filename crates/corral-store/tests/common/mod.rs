//! Shared helpers: synthetic disks, backup and restore shortcuts.
#![allow(dead_code)]

use corral_store::{BackupKind, BeginOptions, DiskInfo, FinishOptions, Store, StoreConfig};

pub const CS: usize = 64 * 1024;
pub const MIB: usize = 1024 * 1024;

/// xorshift64*: deterministic and fast, so tests need no fixtures.
pub struct Rng(pub u64);

impl Rng {
    /// Distinct seeds give distinct streams (xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A synthetic disk: per 64 KiB chunk, 40% random, 30% text-like, 30% zero.
pub fn make_disk(size: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut d = vec![0u8; size];
    for c in d.chunks_mut(CS) {
        match r.below(10) {
            0..=3 => r.fill(c),
            4..=6 => text_fill(&mut r, c),
            _ => {}
        }
    }
    d
}

pub fn text_fill(r: &mut Rng, c: &mut [u8]) {
    const WORDS: [&[u8]; 8] = [
        b"virtual ",
        b"machine ",
        b"backup ",
        b"chunk ",
        b"corral ",
        b"disk\n",
        b"the ",
        b"of ",
    ];
    let mut i = 0;
    while i < c.len() {
        let w = WORDS[r.below(8) as usize];
        let n = w.len().min(c.len() - i);
        c[i..i + n].copy_from_slice(&w[..n]);
        i += n;
    }
}

/// Changes `n` scattered chunks (new random content); returns their offsets.
pub fn scatter_changes(disk: &mut [u8], n: usize, seed: u64) -> Vec<u64> {
    let mut r = Rng::new(seed);
    let slots = disk.len() / CS;
    let mut offs = std::collections::BTreeSet::new();
    while offs.len() < n {
        offs.insert(r.below(slots as u64) * CS as u64);
    }
    for &o in &offs {
        r.fill(&mut disk[o as usize..o as usize + CS]);
    }
    offs.into_iter().collect()
}

pub fn config() -> StoreConfig {
    StoreConfig {
        pack_target: 8 * MIB as u64,
        ..StoreConfig::default()
    }
}

pub fn new_store(dir: &std::path::Path) -> Store {
    Store::init(dir.join("store"), config()).unwrap()
}

pub fn disk_info(name: &str, size: usize) -> DiskInfo {
    DiskInfo {
        name: name.into(),
        size: size as u64,
        role: "system".into(),
        bus: "virtio".into(),
        format: "qcow2".into(),
    }
}

pub fn begin(store: &Store, vm: &str, kind: BackupKind, parent: Option<&str>) -> corral_store::BackupWriter {
    store
        .begin(BeginOptions {
            vm: vm.into(),
            kind,
            parent: parent.map(String::from),
            spec: serde_json::json!({"name": vm, "memory": "1G"}),
        })
        .unwrap()
}

pub fn full(store: &Store, vm: &str, disk: &[u8]) -> String {
    let mut w = begin(store, vm, BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", disk.len())).unwrap();
    for (i, c) in disk.chunks(CS).enumerate() {
        w.write_chunk(d, (i * CS) as u64, c).unwrap();
    }
    w.finish(FinishOptions::default()).unwrap()
}

pub fn incremental(store: &Store, vm: &str, parent: &str, disk: &[u8], changed: &[u64]) -> String {
    let mut w = begin(store, vm, BackupKind::Incremental, Some(parent));
    let d = w.add_disk(disk_info("disk0", disk.len())).unwrap();
    for &o in changed {
        let o = o as usize;
        let end = (o + CS).min(disk.len());
        w.write_chunk(d, o as u64, &disk[o..end]).unwrap();
    }
    w.copy_all_unchanged_from_parent(d).unwrap();
    w.finish(FinishOptions::default()).unwrap()
}

pub fn restore(store: &Store, id: &str, disk: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in store.read_disk(id, disk).unwrap() {
        let c = c.unwrap();
        assert_eq!(c.offset as usize, out.len());
        out.extend_from_slice(&c.data);
    }
    out
}

pub fn hash(b: &[u8]) -> String {
    blake3_hex(b)
}

fn blake3_hex(b: &[u8]) -> String {
    corral_store::ChunkHash::of(b).to_hex()
}
