//! Test harness: a private corral environment (config, data and run dirs in a tempdir),
//! the real `corral` binary, the real test guest built by `guest/build.sh`, and a client for
//! the guest's serial command channel. Every QEMU started in an environment is killed when
//! the environment is dropped, even when a test fails.
#![allow(dead_code)]

pub mod web;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub initrd_qga: PathBuf,
}

/// Builds (or finds in the cache) the test guest, once per test binary.
pub fn guest() -> &'static Guest {
    static G: OnceLock<Guest> = OnceLock::new();
    G.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run guest/build.sh");
        assert!(out.status.success(), "guest/build.sh failed; see its output above");
        let dir = PathBuf::from(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .expect("build.sh prints the dir")
                .trim(),
        );
        Guest {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            initrd_qga: dir.join("initrd-qga.img"),
        }
    })
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// An environment whose config file has `extra` appended (TOML, after the dirs).
    pub fn with_config(extra: &str) -> Env {
        // Short base path: unix socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new().prefix("ct").tempdir_in("/tmp").unwrap();
        let config = dir.path().join("corral.toml");
        let text = format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n{1}\n",
            dir.path().display(),
            if extra.contains("[qemu]") {
                extra.to_string()
            } else {
                format!("[qemu]\naccel = \"tcg\"\n{extra}")
            }
        );
        std::fs::write(&config, text).unwrap();
        Env { dir, config }
    }

    /// The test's private temporary directory (config, data and run dirs live in it).
    pub fn dir_path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn vm_run(&self, name: &str) -> PathBuf {
        self.run_dir().join("vms").join(name)
    }
    pub fn vm_data(&self, name: &str) -> PathBuf {
        self.data_dir().join("vms").join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.env("CORRAL_CONFIG", &self.config)
            .env_remove("CORRAL_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs corral; returns the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run corral")
    }

    /// Runs corral and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs corral and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "corral {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// The QEMU argv corral would run for a VM (`vm show --argv`).
    pub fn argv(&self, name: &str) -> Vec<String> {
        let show = self.json(&["vm", "show", name, "--argv"]);
        show["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    pub fn state(&self, name: &str) -> String {
        self.json(&["vm", "status", name])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Defines a VM that boots the test guest from its kernel, with one small data disk.
    pub fn create_guest(&self, name: &str, extra_cmdline: &str) {
        let g = guest();
        self.create_guest_from(name, &g.kernel, &g.initrd, extra_cmdline, &[]);
    }

    /// Like `create_guest`, with a given kernel and initrd and extra `vm create` options.
    pub fn create_guest_from(&self, name: &str, kernel: &Path, initrd: &Path, extra_cmdline: &str, extra: &[&str]) {
        let cmdline = format!("console=ttyS0 quiet panic=-1 {extra_cmdline}");
        let mut args = vec![
            "vm",
            "create",
            name,
            "--memory",
            "192M",
            "--disk",
            "64M",
            "--display",
            "none",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            cmdline.trim(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Defines the test guest, starts it and waits for its ready marker.
    pub fn boot_guest(&self, name: &str, extra_cmdline: &str) {
        self.create_guest(name, extra_cmdline);
        self.ok(&["vm", "start", name]);
        self.wait_ready(name, 1);
    }

    /// Waits until the guest's console log shows the ready marker `count` times in total.
    pub fn wait_ready(&self, name: &str, count: usize) {
        let log = self.vm_data(name).join("console.log");
        wait_for(Duration::from_secs(90), || {
            std::fs::read_to_string(&log)
                .map(|t| t.matches("CORRAL-GUEST-READY").count() >= count)
                .unwrap_or(false)
        })
        .unwrap_or_else(|_| {
            panic!(
                "{name} never printed CORRAL-GUEST-READY; console: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    }

    pub fn console(&self, name: &str) -> Console {
        Console::connect(&self.vm_run(name).join("serial.sock"))
    }

    /// Every QEMU pid recorded under this environment.
    pub fn qemu_pids(&self) -> Vec<i32> {
        let mut pids = vec![];
        if let Ok(rd) = std::fs::read_dir(self.run_dir().join("vms")) {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path().join("qemu.pid")) {
                    if let Ok(p) = t.trim().parse() {
                        pids.push(p);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in self.qemu_pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if f() {
        Ok(())
    } else {
        Err(())
    }
}

/// The guest's serial command channel: send `<id> <command>`, read until `CORRAL-DONE <id> <rc>`.
pub struct Console {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next: u32,
}

impl Console {
    pub fn connect(path: &Path) -> Console {
        let stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Console {
            stream,
            reader,
            next: 1000 + std::process::id() % 1000,
        }
    }

    /// Runs a shell command in the guest; returns (exit code, output).
    pub fn run(&mut self, cmd: &str) -> (i32, String) {
        self.next += 1;
        let id = self.next;
        writeln!(self.stream, "{id} {cmd}").unwrap();
        let mut out = String::new();
        let marker = format!("CORRAL-DONE {id} ");
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading guest output of {cmd:?}: {e}; so far: {out}"));
            assert!(n > 0, "console closed while running {cmd:?}; so far: {out}");
            let l = line.trim_end_matches(['\r', '\n']);
            if let Some(rc) = l.strip_prefix(&marker) {
                return (rc.trim().parse().unwrap_or(-1), out);
            }
            // Ignore output of earlier, abandoned commands and stray console lines.
            if !l.starts_with("CORRAL-DONE ") {
                out.push_str(l);
                out.push('\n');
            }
        }
    }

    /// Runs a command that must succeed; returns its output.
    pub fn ok(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd);
        assert_eq!(rc, 0, "guest command {cmd:?} failed: {out}");
        out
    }
}

/// A fingerprint of everything on disk under a directory (names, sizes and contents), to
/// prove that a failed command changed nothing. Left out: a VM's console.log (guest output),
/// SQLite's -wal/-shm side files
/// (opening the database may create them without changing any data) and `run/locks/`, where
/// every mutating command records itself as the lock holder in the per-boot run dir.
pub fn tree_digest(dir: &Path) -> Vec<(String, u64, u64)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            // console.log is the guest's own output: a running guest may print at any moment.
            if rel.ends_with("-wal")
                || rel.ends_with("-shm")
                || rel.starts_with("run/locks")
                || rel.ends_with("console.log")
            {
                continue;
            }
            if p.is_dir() {
                out.push((rel.clone() + "/", 0, 0));
                walk(base, &p, out);
            } else {
                let data = std::fs::read(&p).unwrap_or_default();
                let h = data.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ *b as u64).wrapping_mul(0x100000001b3)
                });
                out.push((rel, data.len() as u64, h));
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Content hash of a file (FNV-1a; enough to see any change).
pub fn file_hash(p: &Path) -> u64 {
    std::fs::read(p).unwrap().iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Runs qemu-io on an image (the VM must not be running).
pub fn qemu_io(img: &Path, cmd: &str) -> String {
    let out = Command::new("qemu-io").arg("-c").arg(cmd).arg(img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("failed"),
        "qemu-io {cmd}: {text}"
    );
    text
}

/// Whether `len` bytes at `off` of the image (through its whole chain) all equal `byte`.
pub fn pattern_at(img: &Path, off: u64, len: u64, byte: u8) -> bool {
    let out = Command::new("qemu-io")
        .args(["-r", "-U", "-c", &format!("read -P {byte} {off} {len}")])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    out.status.success() && !text.contains("Pattern verification failed")
}

/// The disk chain of a VM's first disk, active layer first (`disk info`).
pub fn layers(env: &Env, vm: &str) -> Vec<PathBuf> {
    let info = env.json(&["disk", "info", vm]);
    info[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l["path"].as_str().unwrap()))
        .collect()
}

/// Writes `text` (padded to 32 bytes) at 512-byte sector `sector` of the guest's first disk,
/// bypassing the guest's page cache.
pub fn write_at(con: &mut Console, sector: u32, text: &str) {
    con.ok(&format!(
        "printf '%-32s' {text} | dd of=/dev/vda bs=512 seek={sector} count=1 conv=sync,notrunc oflag=direct 2>/dev/null; sync"
    ));
}

/// The 32 bytes at sector `sector` of the guest's first disk, as the guest reads them.
pub fn read_at(con: &mut Console, sector: u32) -> String {
    con.ok(&format!(
        "dd if=/dev/vda bs=512 skip={sector} count=1 iflag=direct 2>/dev/null | head -c 32"
    ))
    .trim()
    .to_string()
}

/// The guest-visible contents of an image (through its chain; `-U`: it may be in use).
pub fn raw_bytes(env: &Env, img: &Path) -> Vec<u8> {
    let raw = env.dir_path().join("view.raw");
    let _ = std::fs::remove_file(&raw);
    let ok = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(img)
        .arg(&raw)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img convert {}", img.display());
    std::fs::read(&raw).unwrap()
}

/// Every file under `dir`, recursively.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `qemu-img compare -U` (one image may be in use): whether two images read the same; the
/// difference is printed when they do not.
pub fn same(a: &Path, b: &Path) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "qemu-img compare {} {}: {}{}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// The image of a VM's `i`-th disk, as its spec says.
pub fn disk_path(env: &Env, vm: &str, i: usize) -> PathBuf {
    let show = env.json(&["vm", "show", vm]);
    PathBuf::from(show["spec"]["disks"][i]["path"].as_str().unwrap())
}

/// Starts the API server in this process on 127.0.0.1:0; returns its address.
pub fn start_server(env: &Env) -> std::net::SocketAddr {
    let cfg = corral_engine::HostConfig::load_file(&env.dir_path().join("corral.toml"), true).unwrap();
    let engine = std::sync::Arc::new(corral_engine::Engine::open(cfg).unwrap());
    engine.watch_idle_vms(); // as `corral serve` does
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = corral_server::ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                insecure_http: false,
                tls: None,
            };
            let listener = corral_server::bind(&opts).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            corral_server::serve(engine, listener, std::future::pending())
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}
