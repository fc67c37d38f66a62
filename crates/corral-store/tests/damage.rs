//! Damaged stores: flipped bytes, truncated packs, broken files. Errors must name the
//! backup, disk and offset (chunks) or the file (store files).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use corral_store::{Store, StoreError};

fn packs(s: &Store) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(s.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    v.sort();
    v
}

/// Offset (in the pack file) of the stored bytes of the chunk at `disk_offset`, found by
/// searching the pack for the record header carrying its hash.
fn record_data_offset(pack: &Path, hash: &[u8; 32]) -> Option<usize> {
    let b = fs::read(pack).unwrap();
    b.windows(32).position(|w| w == hash).map(|p| p + 44)
}

#[test]
fn flipped_byte_is_named_by_verify_and_fails_restore() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let disk = make_disk(8 * MIB, 11);
    let id1 = full(&s, "web", &disk);
    // A second VM sharing the data: the damage affects both.
    let id2 = full(&s, "web-copy", &disk);
    assert!(s.verify(&[]).unwrap().is_ok());

    // Damage the first non-zero chunk at or after 3 MiB.
    let m = s.manifest(&id1).unwrap();
    let idx = s.disk_index(&m, "disk0").unwrap();
    let slot = (48..idx.chunks.len()).find(|&i| !idx.chunks[i].is_zero()).unwrap();
    let offset = (slot * CS) as u64;
    let h = idx.chunks[slot];
    let (pack, at) = packs(&s)
        .into_iter()
        .find_map(|p| record_data_offset(&p, &h.0).map(|o| (p, o)))
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    b[at + 100] ^= 0x01;
    fs::write(&pack, &b).unwrap();

    let r = s.verify(&[]).unwrap();
    assert!(!r.is_ok());
    assert_eq!(r.problems.len(), 1, "{r:?}");
    let p = &r.problems[0];
    assert_eq!(p.hash, h.to_hex());
    let mut used: Vec<(String, String, u64)> = p
        .used_by
        .iter()
        .map(|u| (u.backup.clone(), u.disk.clone(), u.offset))
        .collect();
    used.sort();
    // The chunk may occur more than once on the disk; every use is named.
    assert!(used.contains(&(id1.clone(), "disk0".into(), offset)), "{used:?}");
    assert!(used.contains(&(id2.clone(), "disk0".into(), offset)), "{used:?}");
    assert_eq!(r.affected_backups().len(), 2);
    // Verifying only the other backups' set still finds it.
    assert!(!s.verify(std::slice::from_ref(&id2)).unwrap().is_ok());

    // Restore: chunks before the damage come back, then a loud error naming it.
    let mut reader = s.read_disk(&id1, "disk0").unwrap();
    let mut good = 0u64;
    let err = loop {
        match reader.next().expect("restore ended without reaching the damage") {
            Ok(c) => {
                assert_eq!(c.data, disk[c.offset as usize..c.offset as usize + c.data.len()]);
                good += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(good, slot as u64);
    assert!(reader.next().is_none(), "reader continued after a bad chunk");
    drop(reader); // it holds the store lock shared; gc below would wait for it
    match &err {
        StoreError::BadChunk {
            id, disk, offset: o, ..
        } => {
            assert_eq!((id, disk.as_str(), *o), (&id1, "disk0", offset));
        }
        e => panic!("wrong error {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&id1) && msg.contains(&format!("offset {offset}")), "{msg}");

    // The parallel restore stops at the damage too, with the same error.
    let reached = std::sync::atomic::AtomicU64::new(0);
    let par = s.read_disk(&id1, "disk0").unwrap().restore_runs(2, 4 * MIB, |r| {
        assert!(
            r.offset + r.len <= offset || r.offset > offset,
            "a run over the damage was handed on"
        );
        reached.fetch_add(r.len, std::sync::atomic::Ordering::Relaxed);
        true
    });
    match par {
        Err(StoreError::BadChunk { offset: o, .. }) => assert_eq!(o, offset),
        other => panic!("parallel restore of a damaged disk: {other:?}"),
    }

    // gc does not repack or drop the damaged chunk's pack.
    s.gc(&Default::default()).unwrap();
    assert!(!s.verify(&[]).unwrap().is_ok());
}

#[test]
fn truncated_or_missing_pack_is_reported_per_chunk() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let disk = make_disk(4 * MIB, 12);
    let id = full(&s, "vm", &disk);
    let pack = packs(&s).pop().unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = s.verify(&[]).unwrap();
    assert!(!r.problems.is_empty());
    assert!(
        r.problems.iter().all(|p| p.problem.contains("truncated")),
        "{:?}",
        r.problems[0]
    );
    let e = s
        .read_disk(&id, "disk0")
        .unwrap()
        .find_map(|c| c.err())
        .unwrap()
        .to_string();
    assert!(e.contains("truncated") && e.contains(&id), "{e}");

    fs::remove_file(&pack).unwrap();
    let r = s.verify(&[]).unwrap();
    assert!(r.problems.iter().all(|p| p.problem.contains("cannot be opened")));
}

#[test]
fn broken_store_files_are_named() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let id = full(&s, "vm", &make_disk(2 * MIB, 13));
    let root = s.root().to_path_buf();

    // Manifest: bad JSON, then a future version.
    let mpath = root.join("backups").join(&id).join("manifest.json");
    let good = fs::read(&mpath).unwrap();
    fs::write(&mpath, b"{ truncated").unwrap();
    let e = s.list(None).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains(&id), "{e}");
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["format_version"] = 7.into();
    fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = s.manifest(&id).unwrap_err().to_string();
    assert!(e.contains("format version 7"), "{e}");
    fs::write(&mpath, &good).unwrap();

    // Disk index: flipped byte → verify reports the backup broken; gc refuses to run.
    let ipath = root.join("backups").join(&id).join("disk-0.didx");
    let igood = fs::read(&ipath).unwrap();
    let mut b = igood.clone();
    b[50] ^= 0x40;
    fs::write(&ipath, &b).unwrap();
    let r = s.verify(&[]).unwrap();
    assert_eq!(r.broken.len(), 1);
    assert!(r.broken[0].error.contains("disk-0.didx"), "{}", r.broken[0].error);
    let e = s.gc(&Default::default()).unwrap_err().to_string();
    assert!(e.contains("gc stopped") && e.contains("disk-0.didx"), "{e}");
    fs::write(&ipath, &igood).unwrap();
    assert!(s.verify(&[]).unwrap().is_ok());

    // Pack index with bad magic: open names it.
    let pidx = fs::read_dir(root.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pidx"))
        .unwrap();
    let pgood = fs::read(&pidx).unwrap();
    fs::write(&pidx, b"NOTAPIDX and more bytes than that, still too short").unwrap();
    let e = Store::open(&root).err().unwrap().to_string();
    assert!(
        e.contains(pidx.file_name().unwrap().to_str().unwrap()) && e.contains("bad magic"),
        "{e}"
    );
    fs::write(&pidx, &pgood).unwrap();

    // store.json: unknown format version and garbage.
    let sj = root.join("store.json");
    let sgood = fs::read_to_string(&sj).unwrap();
    fs::write(&sj, sgood.replace("\"format_version\": 1", "\"format_version\": 2")).unwrap();
    let e = Store::open(&root).err().unwrap().to_string();
    assert!(e.contains("store.json") && e.contains("format version 2"), "{e}");
    fs::write(&sj, "][").unwrap();
    let e = Store::open(&root).err().unwrap().to_string();
    assert!(e.contains("store.json") && e.contains("damaged"), "{e}");
    fs::write(&sj, sgood).unwrap();
    assert!(Store::open(&root).unwrap().verify(&[]).unwrap().is_ok());
}
