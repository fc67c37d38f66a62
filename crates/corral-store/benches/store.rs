//! Store throughput (prints figures; not a pass/fail test).
//!
//! - full backup of a 1 GiB synthetic image: per 64 KiB chunk 40% random, 30% text-like
//!   (compressible), 30% zero;
//! - the incremental after 1% of the chunks (scattered) changed;
//! - a verified restore of the incremental;
//!
//! with the store's size after each step.
//!
//! Run: `cargo bench -p corral-store --bench store` (release build). `CORRAL_BENCH_DIR`
//! picks the directory (default: a temp dir under $TMPDIR).

use std::time::Instant;

// The same synthetic data as the tests (xorshift stream, text-like filler).
#[path = "../tests/common/mod.rs"]
mod common;

use common::{text_fill, Rng};

use corral_store::{BackupKind, BeginOptions, DiskInfo, FinishOptions, Store, StoreConfig};

const SIZE: usize = 1 << 30;
const CS: usize = common::CS;
const MIB: f64 = 1024.0 * 1024.0;

/// Chunk `i` of the image at `version` (chunks are generated, not kept: 1 GiB stays off
/// the heap).
fn chunk(i: usize, version: u64, buf: &mut [u8]) {
    let mut r = Rng::new(i as u64 * 1000 + version);
    let kind = Rng::new(i as u64).next() % 10;
    match kind {
        0..=3 => r.fill(buf),
        4..=6 => text_fill(&mut r, buf),
        _ => buf.fill(0),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("store benchmark: run with `cargo bench -p corral-store --bench store`");
        return;
    }
    let base = std::env::var_os("CORRAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let store = Store::init(tmp.path().join("store"), StoreConfig::default()).unwrap();
    let slots = SIZE / CS;
    let mut buf = vec![0u8; CS];
    let disk = DiskInfo {
        name: "disk0".into(),
        size: SIZE as u64,
        ..Default::default()
    };
    let spec = serde_json::json!({"name": "bench"});

    // Full.
    let t0 = Instant::now();
    let mut w = store
        .begin(BeginOptions {
            vm: "bench".into(),
            kind: BackupKind::Full,
            parent: None,
            spec: spec.clone(),
        })
        .unwrap();
    let d = w.add_disk(disk.clone()).unwrap();
    for i in 0..slots {
        chunk(i, 0, &mut buf);
        w.write_chunk(d, (i * CS) as u64, &buf).unwrap();
    }
    let full = w.finish(FinishOptions::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let size_full = store.packs_size().unwrap();
    println!(
        "full backup, 1 GiB (40% random, 30% text, 30% zero)   {:8.1} MiB/s   {:6.2} s   store {:7.1} MiB",
        SIZE as f64 / MIB / secs,
        secs,
        size_full as f64 / MIB
    );

    // Incremental after 1% scattered changes.
    let changed: Vec<usize> = (0..slots).step_by(100).collect();
    let t0 = Instant::now();
    let mut w = store
        .begin(BeginOptions {
            vm: "bench".into(),
            kind: BackupKind::Incremental,
            parent: Some(full.clone()),
            spec,
        })
        .unwrap();
    let d = w.add_disk(disk).unwrap();
    for &i in &changed {
        chunk(i, 1, &mut buf);
        // Make every changed chunk non-zero and new.
        buf[0] ^= 0x5a;
        w.write_chunk(d, (i * CS) as u64, &buf).unwrap();
    }
    w.copy_all_unchanged_from_parent(d).unwrap();
    let incr = w.finish(FinishOptions::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let changed_bytes = (changed.len() * CS) as f64;
    let size_incr = store.packs_size().unwrap();
    println!(
        "incremental, {} changed chunks ({:.1} MiB)          {:8.1} MiB/s   {:6.3} s   store +{:6.1} MiB",
        changed.len(),
        changed_bytes / MIB,
        changed_bytes / MIB / secs,
        secs,
        (size_incr - size_full) as f64 / MIB
    );

    // Verified restore of the incremental.
    let t0 = Instant::now();
    let mut n = 0u64;
    for c in store.read_disk(&incr, "disk0").unwrap() {
        n += c.unwrap().data.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "restore (hash-verified), 1 GiB                         {:8.1} MiB/s   {:6.2} s",
        n as f64 / MIB / secs,
        secs
    );
}
