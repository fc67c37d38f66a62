//! The store lock (`ROOT/lock`, flock(2)).
//!
//! - writers, readers (restore, verify), `delete` and `prune` hold it **shared** for as long
//!   as they work: any number of them run side by side;
//! - `gc` holds it **exclusive**: it waits for (or, without `wait`, refuses while) any of the
//!   above is running, and they wait for it.
//!
//! So gc only ever runs when no writer is alive, and a writer's chunk references (its
//! parent's index and the chunks it deduplicated against) cannot be collected under it.
//! flock dies with its process, so a killed writer never blocks gc.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{ctx, Result, StoreError};

pub struct StoreLock {
    _flock: Flock<File>,
}

fn open(root: &Path) -> Result<File> {
    let p = root.join("lock");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(ctx(&p))
}

fn take(root: &Path, arg: FlockArg) -> Result<Option<StoreLock>> {
    let mut f = open(root)?;
    loop {
        match Flock::lock(f, arg) {
            Ok(l) => return Ok(Some(StoreLock { _flock: l })),
            Err((back, Errno::EINTR)) => f = back,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(StoreError::io(root.join("lock"), e.into())),
        }
    }
}

/// Shared: waits while gc runs.
pub fn shared(root: &Path) -> Result<StoreLock> {
    Ok(take(root, FlockArg::LockShared)?.expect("blocking flock returned EWOULDBLOCK"))
}

/// Exclusive: waits for every writer and reader if `wait`, else fails with
/// [`StoreError::Busy`].
pub fn exclusive(root: &Path, wait: bool) -> Result<StoreLock> {
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    take(root, arg)?
        .ok_or_else(|| StoreError::Busy("a backup, restore or verify is using the store; gc must wait".into()))
}
