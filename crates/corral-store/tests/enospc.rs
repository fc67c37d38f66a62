//! A full filesystem during a backup: a clear NoSpace error, earlier backups intact, and
//! the store usable again after gc. Needs root (mounts an 8 MiB tmpfs); skipped otherwise.

mod common;

use std::process::Command;

use common::*;
use corral_store::{BackupKind, GcOptions, Store, StoreConfig, StoreError};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_filesystem_fails_the_backup_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED full_filesystem_fails_the_backup_cleanly: needs root to mount a tmpfs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8M", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    if !ok {
        eprintln!("SKIPPED full_filesystem_fails_the_backup_cleanly: mount -t tmpfs failed");
        return;
    }
    let _m = Mount(mnt.clone());
    let s = Store::init(
        mnt.join("store"),
        StoreConfig {
            pack_target: MIB as u64,
            ..StoreConfig::default()
        },
    )
    .unwrap();

    let mut small = vec![0u8; 2 * MIB];
    Rng::new(71).fill(&mut small);
    let first = full(&s, "vm", &small);

    // 16 MiB of random data cannot fit in the 6 MiB left.
    let mut big = vec![0u8; 16 * MIB];
    Rng::new(72).fill(&mut big);
    let mut w = begin(&s, "vm", BackupKind::Full, None);
    let d = w.add_disk(disk_info("disk0", big.len())).unwrap();
    let mut err = None;
    for (i, c) in big.chunks(CS).enumerate() {
        if let Err(e) = w.write_chunk(d, (i * CS) as u64, c) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("16 MiB fitted into an 8 MiB tmpfs?");
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no space left") && msg.contains("earlier backups are intact"),
        "{msg}"
    );
    drop(w);

    // Earlier backup intact; nothing new listed.
    let listed: Vec<String> = s.list(None).unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, vec![first.clone()]);
    assert!(s.verify(&[]).unwrap().is_ok());
    assert_eq!(restore(&s, &first, "disk0"), small);

    // gc frees the failed writer's finished packs; then a backup that fits works.
    let r = s.gc(&GcOptions::default()).unwrap();
    assert!(r.bytes_freed > MIB as u64, "{r:?}");
    let mut next = vec![0u8; 3 * MIB];
    Rng::new(73).fill(&mut next);
    let id = full(&s, "vm", &next);
    assert_eq!(restore(&s, &id, "disk0"), next);
}
