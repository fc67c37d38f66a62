//! Shared helpers for the integration tests: a real QEMU process per test.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_qmp::Qmp;
use tempfile::TempDir;

/// How long tests wait for QEMU to come up.
pub const STARTUP: Duration = Duration::from_secs(15);

/// A running QEMU; killed (SIGKILL) and reaped on drop.
pub struct Qemu {
    child: Child,
    pub dir: TempDir,
    pub sock: PathBuf,
}

/// `-M none`: no guest at all, starts in a few milliseconds.
pub const MACHINE_NONE: &[&str] = &["-M", "none"];

impl Qemu {
    /// Starts QEMU with `machine_args` in a fresh temporary directory.
    pub fn start(machine_args: &[&str]) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        Qemu::start_in(dir, machine_args)
    }

    /// Starts QEMU with its QMP socket at `dir/qmp.sock`.
    pub fn start_in(dir: TempDir, machine_args: &[&str]) -> Qemu {
        let sock = socket_path(dir.path());
        let child = Command::new("qemu-system-x86_64")
            .args(machine_args)
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn qemu-system-x86_64 (is QEMU installed?)");
        Qemu { child, dir, sock }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Connects, retrying while QEMU starts.
    pub async fn connect(&self) -> Qmp {
        Qmp::connect_retry(&self.sock, STARTUP)
            .await
            .expect("connect to QEMU's QMP socket")
    }

    /// Waits (blocking, bounded) for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("qmp.sock")
}
