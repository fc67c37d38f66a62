//! QEMU process supervision: spawning detached, recognising our process, waiting for exit.
//!
//! QEMU cannot `-daemonize` under `-sandbox spawn=deny` (the fork is refused), so corral
//! detaches it: the child calls `setsid()` before exec, has no stdin, and writes stderr to the
//! VM's `qemu.log`. Killing corral (or its terminal) never reaches QEMU. The pid comes from
//! QEMU's own `-pidfile`; a pid is only believed when `/proc/PID/cmdline` carries the VM's
//! UUID, so a reused pid cannot be mistaken for the VM.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::EngineError;

/// Finds an executable: an absolute or relative path as given, else a `$PATH` lookup.
pub fn find_binary(name: &str) -> Result<PathBuf, EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(EngineError::QemuMissing {
                binary: name.to_string(),
                where_: String::new(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if is_exec(&p) {
            return Ok(p);
        }
    }
    Err(EngineError::QemuMissing {
        binary: name.to_string(),
        where_: " in $PATH".to_string(),
    })
}

/// Who QEMU runs as, when corral is root and the config names a user.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

pub fn lookup_user(name: &str) -> Result<RunAs, EngineError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(RunAs {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        _ => Err(EngineError::Config {
            path: PathBuf::from("[qemu] user"),
            message: format!(
                "user {name:?} does not exist; create it (`useradd --system {name}`) or remove the setting"
            ),
        }),
    }
}

/// Writes the calling process's pid into `path`. Runs between fork and exec, so it only
/// uses async-signal-safe calls and no allocation.
fn write_own_pid(path: &std::ffi::CStr) -> std::io::Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let fd = open(
        path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut buf = [0u8; 24];
    let mut n = nix::unistd::getpid().as_raw() as u32;
    let mut i = buf.len() - 1;
    buf[i] = b'\n';
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: fd was just opened by us and is closed right after.
    let file = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    nix::unistd::write(&file, &buf[i..])?;
    Ok(())
}

/// Starts QEMU detached. Returns the direct child (its exit status tells a failed start).
///
/// The child writes its own pid to `pidfile` before it executes QEMU (QEMU rewrites the same
/// pid there later): so even if corral is killed the instant after the fork, the next command
/// finds the process that became QEMU and does not start a second one on the same disks.
pub fn spawn_detached(
    argv: &[String],
    log: &Path,
    pidfile: &Path,
    run_as: Option<RunAs>,
) -> Result<Child, EngineError> {
    use std::os::unix::ffi::OsStrExt;
    let pid_c = std::ffi::CString::new(pidfile.as_os_str().as_bytes())
        .map_err(|_| EngineError::io(pidfile)(std::io::ErrorKind::InvalidInput.into()))?;
    let mut logf = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(EngineError::io(log))?;
    let _ = writeln!(logf, "corral: starting {}", crate::qemu_args::shell_line(argv));
    let err = logf.try_clone().map_err(EngineError::io(log))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(err.try_clone().map_err(EngineError::io(log))?)
        .stderr(err)
        .env_remove("DISPLAY")
        .current_dir("/");
    if let Some(ra) = run_as {
        // std drops root's supplementary groups itself when it switches uid (before any
        // pre_exec closure runs, so those run unprivileged).
        cmd.uid(ra.uid).gid(ra.gid);
    }
    // SAFETY: setsid() and umask() are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Own session: signals to corral's process group or terminal never reach QEMU.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Everything QEMU creates (monitor sockets, pidfile, console log) is 0600.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            write_own_pid(&pid_c)
        });
    }
    cmd.spawn().map_err(|e| EngineError::StartFailed {
        name: String::new(),
        message: format!("cannot execute {}: {e}", argv[0]),
    })
}

/// Reads a pidfile written by QEMU.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and is the QEMU of the VM with this UUID.
pub fn is_our_qemu(pid: u32, uuid: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            // A zombie has an empty cmdline: it is gone for our purposes.
            !cmd.is_empty() && cmd.split(|b| *b == 0).any(|w| w == uuid.as_bytes())
        }
        Err(_) => false,
    }
}

/// Seconds since the process started, from /proc.
pub fn uptime_seconds(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime, clock ticks since boot) comes after the parenthesised comm.
    let after = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??.max(1) as u64;
    let boot_up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((boot_up - start_ticks as f64 / ticks as f64).max(0.0) as u64)
}

pub fn send_signal(pid: u32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// Polls until the VM's process is gone or the deadline passes. Returns whether it is gone.
pub async fn wait_gone(pid: u32, uuid: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_our_qemu(pid, uuid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The last `n` lines of a text file (for crash reports and failed starts).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
