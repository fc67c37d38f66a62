//! Writers that die: dropped without finish, SIGKILLed in a child process; concurrent writers;
//! gc keeps what complete backups use.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use corral_store::{BackupKind, FinishOptions, GcOptions, Store, StoreConfig};

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn small_packs() -> StoreConfig {
    StoreConfig {
        pack_target: MIB as u64,
        ..StoreConfig::default()
    }
}

#[test]
fn dropped_writer_leaves_nothing_visible_and_gc_frees_its_packs() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::init(t.path().join("s"), small_packs()).unwrap();
    let disk = make_disk(4 * MIB, 21);
    let keep = full(&s, "vm", &disk);
    let used = s.packs_size().unwrap();

    // Several finished packs plus a partial one, then dropped.
    let other = make_disk(8 * MIB, 22);
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", other.len())).unwrap();
    for (i, c) in other.chunks(CS).enumerate().take(100) {
        w.write_chunk(d, (i * CS) as u64, c).unwrap();
    }
    assert!(s.packs_size().unwrap() > used + 2 * MIB as u64);
    drop(w);

    assert_eq!(s.list(None).unwrap().len(), 1);
    assert_eq!(file_count(&s.root().join("tmp")), 0);
    // The next backup works (and sees the dead writer's chunks only as garbage).
    let id = full(&s, "vm", &make_disk(2 * MIB, 23));
    assert_eq!(s.list(None).unwrap().len(), 2);

    let r = s.gc(&GcOptions::default()).unwrap();
    assert!(r.chunks_freed > 50, "{r:?}");
    assert!(r.bytes_freed > 2 * MIB as u64, "{r:?}");
    assert!(s.verify(&[]).unwrap().is_ok());
    assert_eq!(restore(&s, &keep, "disk0"), disk);
    assert_eq!(restore(&s, &id, "disk0"), make_disk(2 * MIB, 23));
    // Nothing left to free.
    let r = s.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.chunks_freed, r.bytes_freed, r.debris_files), (0, 0, 0), "{r:?}");
}

const CHILD_ENV: &str = "CORRAL_STORE_TEST_CHILD_STORE";

/// Not a test of its own: the body of the child process `killed_writer_*` SIGKILLs. Without
/// the variable it does nothing.
#[test]
fn child_writer_that_gets_killed() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = Store::open(&root).unwrap();
    let disk = make_disk(16 * MIB, 31);
    let mut w = begin(&s, "victim", BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", disk.len())).unwrap();
    for (i, c) in disk.chunks(CS).enumerate() {
        w.write_chunk(d, (i * CS) as u64, c).unwrap();
        if i == 200 {
            std::fs::write(Path::new(&root).join("child-ready"), b"").unwrap();
        }
    }
    // Staging directory too, as if killed inside finish.
    std::fs::create_dir(Path::new(&root).join("tmp").join(w.id())).unwrap();
    std::fs::write(Path::new(&root).join("tmp").join(w.id()).join("manifest.json"), b"{").unwrap();
    std::fs::write(Path::new(&root).join("child-ready"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(600));
    unreachable!("should have been killed");
}

#[test]
fn killed_writer_leaves_nothing_visible_and_gc_frees_its_debris() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::init(t.path().join("s"), small_packs()).unwrap();
    let disk = make_disk(2 * MIB, 30);
    let keep = full(&s, "victim", &disk);
    let size_before = s.packs_size().unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_that_gets_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, s.root())
        .spawn()
        .unwrap();
    let ready = s.root().join("child-ready");
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "child never got going");
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Kill it mid-write (it is past chunk 200, maybe further).
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::fs::remove_file(&ready).unwrap();

    // Reopen as a new process would.
    let s = Store::open(s.root()).unwrap();
    let listed: Vec<String> = s.list(None).unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, vec![keep.clone()]);
    assert!(s.packs_size().unwrap() > size_before, "child wrote nothing?");

    // The next backup works, even with the debris there.
    let id = incremental(&s, "victim", &keep, &disk, &[0]);
    assert_eq!(s.list(None).unwrap().len(), 2);

    // gc does not wait for a dead writer (its flock died with it) and removes the debris.
    let r = s
        .gc(&GcOptions {
            wait: false,
            ..Default::default()
        })
        .unwrap();
    assert!(r.debris_files >= 1, "{r:?}");
    assert!(r.bytes_freed > 0, "{r:?}");
    assert_eq!(file_count(&s.root().join("tmp")), 0);
    let leftover: Vec<String> = std::fs::read_dir(s.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.ends_with(".tmp")
                || n.ends_with(".pack") && !s.root().join("packs").join(n.replace(".pack", ".pidx")).exists()
        })
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
    assert_eq!(
        s.packs_size().unwrap(),
        size_before,
        "only the complete backups' chunks remain"
    );
    assert!(s.verify(&[]).unwrap().is_ok());
    assert_eq!(restore(&s, &id, "disk0"), disk);
}

#[test]
fn gc_keeps_every_chunk_a_complete_backup_uses_and_repacks_mostly_garbage_packs() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::init(t.path().join("s"), small_packs()).unwrap();
    let a = make_disk(6 * MIB, 41);
    let b = make_disk(6 * MIB, 42);
    // One backup with both images' chunks interleaved in the same packs...
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let da = w.add_disk(disk_info("a", a.len())).unwrap();
    let db = w.add_disk(disk_info("b", b.len())).unwrap();
    for i in (0..a.len()).step_by(CS) {
        w.write_chunk(da, i as u64, &a[i..i + CS]).unwrap();
        w.write_chunk(db, i as u64, &b[i..i + CS]).unwrap();
    }
    let both = w.finish(FinishOptions::default()).unwrap();
    // ...and one that uses only `a`'s.
    let only_a = full(&s, "vm", &a);
    assert!(s.gc(&GcOptions::default()).unwrap().chunks_freed == 0);

    s.delete(&both).unwrap();
    let before = s.packs_size().unwrap();
    let r = s.gc(&GcOptions::default()).unwrap();
    assert!(r.packs_repacked > 0, "{r:?}");
    assert!(r.chunks_freed > 0 && r.bytes_freed > 0, "{r:?}");
    assert!(s.packs_size().unwrap() < before);
    assert!(s.verify(&[]).unwrap().is_ok());
    assert_eq!(restore(&s, &only_a, "disk0"), a);

    // Deleting the last backup frees everything.
    s.delete(&only_a).unwrap();
    s.gc(&GcOptions::default()).unwrap();
    assert_eq!(s.packs_size().unwrap(), 0);
    assert_eq!(s.chunk_count(), 0);
}

#[test]
fn concurrent_writers_both_succeed_and_gc_waits_for_them() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::init(t.path().join("s"), small_packs()).unwrap();
    let shared = make_disk(8 * MIB, 51);
    let handles: Vec<_> = (0..2)
        .map(|n| {
            let s = s.clone();
            let mut disk = shared.clone();
            std::thread::spawn(move || {
                scatter_changes(&mut disk, 20, 60 + n);
                let id = full(&s, &format!("vm{n}"), &disk);
                (id, disk)
            })
        })
        .collect();
    // A gc that cannot wait while both write either runs before or reports busy.
    let _ = s.gc(&GcOptions {
        wait: false,
        ..Default::default()
    });
    let done: Vec<(String, Vec<u8>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(s.list(None).unwrap().len(), 2);
    s.gc(&GcOptions::default()).unwrap();
    assert!(s.verify(&[]).unwrap().is_ok());
    for (id, disk) in &done {
        assert_eq!(hash(&restore(&s, id, "disk0")), hash(disk));
    }

    // A gc asked not to wait refuses while a writer is open; a waiting one blocks until done.
    let w = begin(&s, "vm0", BackupKind::Full, None);
    let e = s
        .gc(&GcOptions {
            wait: false,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("busy"), "{e}");
    let s2 = s.clone();
    let gc = std::thread::spawn(move || {
        let t0 = Instant::now();
        s2.gc(&GcOptions::default()).unwrap();
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(w);
    assert!(gc.join().unwrap() >= Duration::from_millis(250));
}
