//! Per-VM locks. A mutating operation holds an exclusive `flock` on `<run_dir>/locks/<name>.lock`
//! for its whole duration; the file says who holds it, so a second mutation fails at once with
//! "VM NAME is busy: OPERATION by pid N". The kernel drops the lock when the holder dies, so a
//! killed corral never leaves a VM locked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::EngineError;
use crate::paths::ensure_dir;

/// Held for as long as the operation runs; released on drop.
#[derive(Debug)]
pub struct VmLock {
    _lock: Flock<File>,
    pub operation: String,
}

/// Takes the lock for `name`, or says who holds it.
pub fn lock_vm(lock_dir: &Path, name: &str, operation: &str) -> Result<VmLock, EngineError> {
    ensure_dir(lock_dir, 0o700).map_err(EngineError::io(lock_dir))?;
    let path: PathBuf = lock_dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(EngineError::io(&path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // Record the holder for whoever comes second.
            let me = format!("{} {}\n", std::process::id(), operation);
            let _ = lock.set_len(0);
            let _ = lock.seek(SeekFrom::Start(0));
            let _ = lock.write_all(me.as_bytes());
            let _ = lock.flush();
            Ok(VmLock {
                _lock: lock,
                operation: operation.to_string(),
            })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let (pid, op) = holder.trim().split_once(' ').unwrap_or(("0", "an operation"));
            Err(EngineError::Busy {
                name: name.to_string(),
                operation: op.to_string(),
                pid: pid.parse().unwrap_or(0),
            })
        }
        Err((_, e)) => Err(EngineError::Io {
            path,
            source: std::io::Error::from(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_vm(dir.path(), "web1", "start").unwrap();
        let err = lock_vm(dir.path(), "web1", "stop").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("VM web1 is busy: start by pid {}", std::process::id())
        );
        // Other VMs are independent.
        let _other = lock_vm(dir.path(), "web2", "stop").unwrap();
        drop(held);
        let again = lock_vm(dir.path(), "web1", "stop").unwrap();
        assert_eq!(again.operation, "stop");
    }
}
