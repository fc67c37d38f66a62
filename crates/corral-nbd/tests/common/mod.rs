//! Shared helpers for the tests against the real qemu-nbd: images made with qemu-img and
//! qemu-io, and a qemu-nbd process that is killed when the test ends.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_nbd::{ConnectOptions, NbdClient};
use tempfile::TempDir;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// Bound on every test: a hang is a failure, not a stuck CI run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out: the client hung")
}

/// A qcow2 image in its own temporary directory.
pub struct Image {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl Image {
    /// `qemu-img create -f qcow2` of `size` bytes (64 KiB clusters).
    pub fn create(size: u64) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.qcow2");
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", path_str(&path), &size.to_string()],
        );
        Image { dir, path }
    }

    /// `qemu-io -c 'write -P PATTERN OFFSET LEN'`.
    pub fn write(&self, pattern: u8, offset: u64, len: u64) -> &Image {
        let cmd = format!("write -P {pattern:#x} {offset} {len}");
        run("qemu-io", &["-f", "qcow2", "-c", &cmd, path_str(&self.path)]);
        self
    }

    /// A persistent dirty bitmap, enabled from now on.
    pub fn add_bitmap(&self, name: &str) -> &Image {
        run(
            "qemu-img",
            &["bitmap", "--add", "--enable", "-f", "qcow2", path_str(&self.path), name],
        );
        self
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is qemu-utils installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `qemu-nbd`; SIGKILLed and reaped on drop.
/// Spawns `cmd` (a `qemu-nbd` with its export arguments) as a persistent qcow2 server
/// with no stdin or stdout.
fn spawn_qemu_nbd(cmd: &mut Command) -> Child {
    cmd.args(["--persistent", "--format=qcow2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn qemu-nbd (is qemu-utils installed?)")
}

pub struct QemuNbd {
    child: Child,
    pub sock: PathBuf,
}

impl QemuNbd {
    /// Exports `image` read-only on a unix socket in the image's directory, with `extra`
    /// arguments (e.g. `--bitmap=bm0`, `--export-name=NAME`).
    pub fn start(image: &Image, extra: &[&str]) -> QemuNbd {
        QemuNbd::start_mode(image, extra, true)
    }

    /// Exports `image` writable (for write and flush tests).
    pub fn start_writable(image: &Image) -> QemuNbd {
        QemuNbd::start_mode(image, &[], false)
    }

    fn start_mode(image: &Image, extra: &[&str], read_only: bool) -> QemuNbd {
        let sock = image.dir.path().join("nbd.sock");
        let _ = std::fs::remove_file(&sock);
        let child = spawn_qemu_nbd(
            Command::new("qemu-nbd")
                .arg(format!("--socket={}", sock.display()))
                .args(read_only.then_some("--read-only"))
                .args(extra)
                .arg(&image.path),
        );
        let probe = sock.clone();
        let mut nbd = QemuNbd { child, sock };
        // Not yet necessarily listening: `connect` retries until it is.
        nbd.wait_ready(|| probe.exists());
        nbd
    }

    /// Exports `image` read-only on TCP 127.0.0.1:`port`; connect with [`QemuNbd::connect_tcp`].
    pub fn start_tcp(image: &Image, port: u16) -> QemuNbd {
        let child = spawn_qemu_nbd(
            Command::new("qemu-nbd")
                .arg("--bind=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg("--read-only")
                .arg(&image.path),
        );
        QemuNbd {
            child,
            sock: PathBuf::new(),
        }
    }

    fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("qemu-nbd exited at startup: {status}");
            }
            if ready() {
                return;
            }
            assert!(Instant::now() < deadline, "qemu-nbd did not come up in 15 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` to qemu-nbd.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal qemu-nbd");
    }

    /// Connects over TCP, retrying while qemu-nbd starts.
    pub async fn connect_tcp(&mut self, port: u16, opts: &ConnectOptions) -> NbdClient {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match NbdClient::connect_tcp(&format!("127.0.0.1:{port}"), opts).await {
                Ok(c) => return c,
                Err(corral_nbd::NbdError::Connect { .. }) if Instant::now() < deadline => {
                    if let Some(status) = self.child.try_wait().expect("try_wait") {
                        panic!("qemu-nbd exited at startup: {status}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("connect to qemu-nbd over TCP: {e}"),
            }
        }
    }

    /// Connects a client with `opts`, retrying for a while if qemu-nbd is not listening yet
    /// (its socket file appears at bind(), a moment before listen()).
    pub async fn connect(&self, opts: &ConnectOptions) -> Result<NbdClient, corral_nbd::NbdError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match NbdClient::connect_unix(&self.sock, opts).await {
                Err(corral_nbd::NbdError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options with a short timeout, so a hang shows as an error.
pub fn opts() -> ConnectOptions {
    ConnectOptions::new("").timeout(Some(Duration::from_secs(10)))
}

/// What the image reads as: `writes` (pattern, offset, len) applied in order over zeros.
pub fn expected(size: u64, writes: &[(u8, u64, u64)]) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for &(p, o, l) in writes {
        v[o as usize..(o + l) as usize].fill(p);
    }
    v
}

/// Where two buffers first differ, for readable failures on multi-megabyte reads.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), 0, 0));
    }
    a.iter().zip(b).position(|(x, y)| x != y).map(|i| (i, a[i], b[i]))
}
