//! Which VMs have no QEMU (stopped or saved), remembered by a long-lived process between
//! `list` calls and forgotten the moment a file that decides it changes.
//!
//! A VM with no QEMU is stopped or saved by what exists in two directories: its pidfile in
//! `<run_dir>/vms/NAME` and its saved state in `<data_dir>/vms/NAME`. Looking at those
//! costs two failing syscalls per VM, most of a daemon's `GET /api/v1/vms` with hundreds of
//! VMs. So `corral serve` watches both directories of each such VM with inotify (and the two
//! `vms` directories above them, for VM directories made or removed later): any entry
//! created, removed or renamed in them drops what was remembered about that VM, and the next
//! `list` looks again. The watch is in place before the look, and every event is read before
//! a remembered state is used, so a remembered state is never older than the call: a
//! pidfile written by QEMU (started from this process or any other) is seen at once.
//! VMs with a pidfile are never remembered; they are looked at (and QEMU asked) every time.

use std::collections::HashMap;

use corral_types::RunState;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::config::HostConfig;
use crate::paths::{ensure_dir, VmPaths};

/// Namespace changes in a directory, and the directory itself going away.
fn dir_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

pub(crate) struct IdleWatch {
    ino: Inotify,
    /// `<run_dir>/vms` and `<data_dir>/vms`: their events name the VM directory.
    parents: [WatchDescriptor; 2],
    /// A VM's own directories, by watch.
    dirs: HashMap<WatchDescriptor, String>,
    /// VMs seen with no QEMU, and what they were.
    idle: HashMap<String, RunState>,
}

impl IdleWatch {
    /// `None` where inotify cannot be used (then every `list` looks at every VM).
    pub(crate) fn new(cfg: &HostConfig) -> Option<IdleWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mut parents = vec![];
        for dir in [cfg.run_dir.join("vms"), cfg.data_dir.join("vms")] {
            ensure_dir(&dir, 0o700).ok()?;
            parents.push(ino.add_watch(&dir, dir_events()).ok()?);
        }
        Some(IdleWatch {
            ino,
            parents: [parents[0], parents[1]],
            dirs: HashMap::new(),
            idle: HashMap::new(),
        })
    }

    /// Reads every pending event and forgets the VMs they concern. `false` when the watch
    /// can no longer be trusted (a `vms` directory itself went away): drop it.
    pub(crate) fn catch_up(&mut self) -> bool {
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    self.idle.clear(); // events were lost: forget everything
                } else if self.parents.contains(&ev.wd) {
                    match &ev.name {
                        Some(name) => {
                            self.idle.remove(name.to_string_lossy().as_ref());
                        }
                        None => return false, // the vms directory itself was removed or moved
                    }
                } else if let Some(name) = self.dirs.get(&ev.wd) {
                    self.idle.remove(name);
                    if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                        self.dirs.remove(&ev.wd);
                    }
                }
            }
        }
    }

    /// The remembered state of a VM with no QEMU, if nothing changed since it was seen.
    pub(crate) fn get(&self, name: &str) -> Option<RunState> {
        self.idle.get(name).copied()
    }

    /// Watches a VM's directories; call before looking at them, so that whatever changes
    /// after the look is an event. `false` if a watch could not be added (then do not
    /// remember the VM). A directory that does not exist is covered by its parent's watch.
    pub(crate) fn watch(&mut self, name: &str, paths: &VmPaths) -> bool {
        for dir in [&paths.run, &paths.data] {
            match self.ino.add_watch(dir.as_path(), dir_events()) {
                Ok(wd) => {
                    self.dirs.insert(wd, name.to_string());
                }
                Err(Errno::ENOENT) => {}
                Err(_) => return false, // e.g. ENOSPC: out of inotify watches
            }
        }
        true
    }

    /// Remembers a VM seen (after `watch`) with no QEMU.
    pub(crate) fn remember(&mut self, name: &str, state: RunState) {
        if matches!(state, RunState::Stopped | RunState::Saved) {
            self.idle.insert(name.to_string(), state);
        }
    }
}
