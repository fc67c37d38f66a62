//! Full, incremental, zero chunks, dedup, restore, skeletons, listing.

mod common;

use common::*;
use corral_store::{BackupKind, FinishOptions, Store};

#[test]
fn full_then_incremental_stores_only_changed_chunks_and_restores_exactly() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let mut disk = make_disk(64 * MIB, 1);
    let zero_slots = disk.chunks(CS).filter(|c| c.iter().all(|&b| b == 0)).count() as u64;

    let id1 = full(&s, "web1", &disk);
    let m1 = s.manifest(&id1).unwrap();
    assert_eq!(m1.kind, BackupKind::Full);
    assert_eq!(m1.stats.bytes_read, 64 * MIB as u64);
    assert_eq!(m1.stats.zero_chunks, zero_slots);
    assert_eq!(
        m1.stats.new_chunks + m1.stats.zero_chunks + m1.stats.reused_chunks,
        1024
    );
    let after_full = s.packs_size().unwrap();

    // 1% of the chunks changed, scattered.
    let changed = scatter_changes(&mut disk, 10, 2);
    let id2 = incremental(&s, "web1", &id1, &disk, &changed);
    let m2 = s.manifest(&id2).unwrap();
    assert_eq!(m2.kind, BackupKind::Incremental);
    assert_eq!(m2.parent.as_deref(), Some(id1.as_str()));
    assert_eq!(m2.stats.new_chunks, 10);
    assert_eq!(m2.stats.new_bytes, 10 * CS as u64);
    assert_eq!(m2.stats.bytes_read, 10 * CS as u64);
    let grew = s.packs_size().unwrap() - after_full;
    // Random new content does not compress: ~640 KiB plus record headers and the pack index.
    assert!(grew < 10 * CS as u64 + 8192, "incremental added {grew} bytes");
    assert!(grew >= 10 * CS as u64, "incremental added only {grew} bytes");

    // Each backup restores to exactly its own bytes.
    assert_eq!(hash(&restore(&s, &id2, "disk0")), hash(&disk));
    let before = make_disk(64 * MIB, 1);
    assert_eq!(hash(&restore(&s, &id1, "disk0")), hash(&before));
    assert_ne!(hash(&before), hash(&disk));

    // restore_to into a file gives the same bytes (zeros left as holes).
    let path = t.path().join("restored.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(disk.len() as u64).unwrap();
    s.read_disk(&id2, "disk0").unwrap().restore_to(&mut f).unwrap();
    assert_eq!(hash(&std::fs::read(&path).unwrap()), hash(&disk));

    // Deleting the parent leaves the incremental whole.
    s.delete(&id1).unwrap();
    s.gc(&Default::default()).unwrap();
    assert!(s.verify(&[]).unwrap().is_ok());
    assert_eq!(hash(&restore(&s, &id2, "disk0")), hash(&disk));
}

#[test]
fn zero_chunks_are_not_stored() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let mut disk = vec![0u8; 16 * MIB];
    disk[5 * CS + 17] = 1; // one non-zero chunk
    let id = full(&s, "vm", &disk);
    let m = s.manifest(&id).unwrap();
    assert_eq!(m.stats.zero_chunks, 255);
    assert_eq!(m.stats.new_chunks, 1);
    assert_eq!(s.chunk_count(), 1);
    assert!(s.packs_size().unwrap() < 4096, "{}", s.packs_size().unwrap());
    let idx = s.disk_index(&m, "disk0").unwrap();
    assert_eq!(idx.chunks.iter().filter(|h| h.is_zero()).count(), 255);
    assert_eq!(restore(&s, &id, "disk0"), disk);

    // zero() records a zero chunk without data.
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let d = w.add_disk(disk_info("d", 2 * CS)).unwrap();
    w.zero(d, 0).unwrap();
    w.zero(d, CS as u64).unwrap();
    let id = w.finish(FinishOptions::default()).unwrap();
    assert_eq!(restore(&s, &id, "d"), vec![0; 2 * CS]);
}

#[test]
fn same_data_in_two_vms_is_stored_once() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let disk = make_disk(32 * MIB, 7);
    full(&s, "alpha", &disk);
    let size1 = s.packs_size().unwrap();
    let id = full(&s, "beta", &disk);
    let m = s.manifest(&id).unwrap();
    assert_eq!(m.stats.new_chunks, 0);
    assert_eq!(m.stats.new_bytes, 0);
    assert!(m.stats.reused_chunks > 0);
    assert_eq!(s.packs_size().unwrap(), size1);
    assert_eq!(s.list(Some("alpha")).unwrap().len(), 1);
    assert_eq!(s.list(None).unwrap().len(), 2);
    assert_eq!(hash(&restore(&s, &id, "disk0")), hash(&disk));
}

#[test]
fn manifest_records_everything_and_list_is_oldest_first() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let disk = make_disk(MIB + 1000, 3); // short last chunk
    let mut w = begin(&s, "db", BackupKind::Full, None);
    let d = w.add_disk(disk_info("root", disk.len())).unwrap();
    w.add_skeleton_disk(disk_info("scratch", 10 * MIB)).unwrap();
    for (i, c) in disk.chunks(CS).enumerate() {
        w.write_chunk(d, (i * CS) as u64, c).unwrap();
    }
    let id1 = w
        .finish(FinishOptions {
            tags: vec!["nightly".into()],
        })
        .unwrap();
    let m = s.manifest(&id1).unwrap();
    assert_eq!(m.format_version, 1);
    assert_eq!(m.vm, "db");
    assert_eq!(m.spec["memory"], "1G");
    assert_eq!(m.tags, vec!["nightly"]);
    assert!(m.time.ends_with('Z') && m.time.contains('T'));
    assert!(m.time_unix > 1_700_000_000);
    assert_eq!(m.disks.len(), 2);
    assert!(m.disks[0].stored && !m.disks[1].stored);
    assert_eq!(m.disks[1].index, None);
    assert_eq!(m.disks[0].info.bus, "virtio");
    assert_eq!(restore(&s, &id1, "root"), disk);
    assert!(s.read_disk(&id1, "scratch").is_err());

    let mut w = begin(&s, "db", BackupKind::Skeleton, None);
    w.add_skeleton_disk(disk_info("root", disk.len())).unwrap();
    let id2 = w.finish(FinishOptions::default()).unwrap();
    let ids: Vec<String> = s.list(Some("db")).unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![id1.clone(), id2]);

    // Reopening sees the same.
    let s2 = Store::open(s.root()).unwrap();
    assert_eq!(s2.list(None).unwrap().len(), 2);
    assert_eq!(restore(&s2, &id1, "root"), disk);

    // Peeking without opening (monitoring) finds the same backups and manifests; an id that
    // is not there, or not an id at all, is "not found".
    let mut peeked = Store::peek_backup_ids(s.root()).unwrap();
    peeked.sort();
    let listed: Vec<String> = s.list(None).unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(peeked, listed);
    assert_eq!(Store::peek_manifest(s.root(), &id1).unwrap(), m);
    assert!(matches!(
        Store::peek_manifest(s.root(), "19700101T000000.000Z-00000000"),
        Err(corral_store::StoreError::BackupNotFound(_))
    ));
    assert!(matches!(
        Store::peek_manifest(s.root(), "../store.json"),
        Err(corral_store::StoreError::BackupNotFound(_))
    ));
    assert!(Store::peek_backup_ids(&t.path().join("nowhere")).unwrap().is_empty());
}

#[test]
fn writer_refuses_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let d = w.add_disk(disk_info("d", 3 * CS)).unwrap();
    assert!(w.add_disk(disk_info("d", CS)).is_err(), "duplicate name");
    assert!(w.write_chunk(d, 100, &[1; CS]).is_err(), "unaligned");
    assert!(w.write_chunk(d, 3 * CS as u64, &[1; CS]).is_err(), "past the end");
    assert!(w.write_chunk(d, 0, &[1; 100]).is_err(), "short chunk");
    assert!(w.copy_unchanged_from_parent(d, 0).is_err(), "no parent");
    w.write_chunk(d, 0, &[1; CS]).unwrap();
    let e = w.finish(FinishOptions::default()).unwrap_err().to_string();
    assert!(e.contains("offset 65536") && e.contains("never written"), "{e}");
    assert!(s.list(None).unwrap().is_empty());
    // An incremental needs a parent of the same VM.
    assert!(s
        .begin(corral_store::BeginOptions {
            vm: "vm".into(),
            kind: BackupKind::Incremental,
            parent: None,
            spec: serde_json::Value::Null,
        })
        .is_err());
    let id = full(&s, "other", &[7u8; CS]);
    let e = s
        .begin(corral_store::BeginOptions {
            vm: "vm".into(),
            kind: BackupKind::Incremental,
            parent: Some(id),
            spec: serde_json::Value::Null,
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("VM other"), "{e}");
}

#[test]
fn store_config_is_checked_and_kept() {
    let t = tempfile::tempdir().unwrap();
    for cs in [1000, 2048, 8 * MIB as u32] {
        let c = corral_store::StoreConfig {
            chunk_size: cs,
            ..Default::default()
        };
        assert!(Store::init(t.path().join(format!("s{cs}")), c).is_err(), "{cs}");
    }
    let c = corral_store::StoreConfig {
        chunk_size: 4096,
        zstd_level: 9,
        pack_target: MIB as u64,
    };
    let s = Store::init(t.path().join("s"), c.clone()).unwrap();
    assert!(Store::init(t.path().join("s"), c.clone()).is_err());
    assert_eq!(Store::open(t.path().join("s")).unwrap().config(), &c);
    let e = Store::open(t.path()).err().unwrap().to_string();
    assert!(e.contains("not a corral store"), "{e}");
    // 4 KiB chunks work end to end.
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let d = w.add_disk(disk_info("d", 10_000)).unwrap();
    let data = make_disk(CS, 9);
    for o in (0..10_000).step_by(4096) {
        w.write_chunk(d, o as u64, &data[o..(o + 4096).min(10_000)]).unwrap();
    }
    let id = w.finish(FinishOptions::default()).unwrap();
    assert_eq!(restore(&s, &id, "d"), &data[..10_000]);
}

#[test]
fn chunks_prepared_on_other_threads_store_the_same_backup() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    let mut disk = make_disk(16 * MIB, 11);
    // The same chunk twice in this disk: prepared apart, it must still be stored once.
    let (a, b) = disk.split_at_mut(8 * MIB);
    b[..CS].copy_from_slice(&a[CS..2 * CS]);
    let mut w = begin(&s, "par", BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", disk.len())).unwrap();
    let preparer = w.preparer();
    let halves: Vec<Vec<(u64, corral_store::PreparedChunk)>> = std::thread::scope(|sc| {
        let jobs: Vec<_> = disk
            .chunks(8 * MIB)
            .enumerate()
            .map(|(k, half)| {
                let p = preparer.clone();
                sc.spawn(move || {
                    half.chunks(CS)
                        .enumerate()
                        .map(|(i, c)| ((k * 8 * MIB + i * CS) as u64, p.prepare(c)))
                        .collect()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (off, p) in halves.into_iter().flatten() {
        w.put_prepared(d, off, p).unwrap();
    }
    assert_eq!(w.stats().reused_chunks, 1, "the repeated chunk is stored once");
    assert_eq!(w.stats().bytes_read, disk.len() as u64);
    let id = w.finish(Default::default()).unwrap();
    assert_eq!(hash(&restore(&s, &id, "disk0")), hash(&disk));
    // A prepared chunk of the wrong length is refused.
    let mut w = begin(&s, "par2", BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", 2 * CS)).unwrap();
    let short = w.preparer().prepare(&[1u8; 100]);
    assert!(w.put_prepared(d, 0, short).is_err());
}

#[test]
fn parallel_restore_runs_cover_the_disk_exactly() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(t.path());
    // Not a whole number of chunks: the last run is short.
    let disk = make_disk(12 * MIB + 5000, 5);
    let id = full(&s, "runs", &disk);
    let out = std::sync::Mutex::new(vec![0xeeu8; disk.len()]);
    let covered = std::sync::atomic::AtomicU64::new(0);
    let done = s
        .read_disk(&id, "disk0")
        .unwrap()
        .restore_runs(3, MIB, |r| {
            assert!(r.is_zero() || r.data.len() as u64 == r.len);
            assert!(r.is_zero() || r.len <= MIB as u64);
            let mut o = out.lock().unwrap();
            let dst = &mut o[r.offset as usize..(r.offset + r.len) as usize];
            if r.is_zero() {
                dst.fill(0);
            } else {
                dst.copy_from_slice(&r.data);
            }
            covered.fetch_add(r.len, std::sync::atomic::Ordering::Relaxed);
            true
        })
        .unwrap();
    assert!(done);
    assert_eq!(covered.into_inner(), disk.len() as u64, "every byte exactly once");
    assert_eq!(hash(&out.into_inner().unwrap()), hash(&disk));
    // A sink that says stop ends it early without an error.
    let stopped = s
        .read_disk(&id, "disk0")
        .unwrap()
        .restore_runs(2, MIB, |_| false)
        .unwrap();
    assert!(!stopped);
}
