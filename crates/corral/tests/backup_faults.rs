//! Backups under faults, through the real `corral` binary: corral killed in the middle of a
//! backup (a stopped VM served by qemu-storage-daemon, and a running guest), a store whose
//! filesystem fills up, the VM stopping under a live backup (QEMU killed; the guest powering
//! itself off), and unknown ids, tags and VMs, and a restore over a running VM.
//!
//! After each fault: nothing partial is listed, nothing is left running that holds the disks,
//! the next backup works, and what is listed restores bit-identical (`qemu-img compare`).
//! (The fallback to a full read after QEMU was killed, compared bit for bit, is in
//! backup.rs; here it is also checked after a backup that QEMU's death interrupted.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{disk_path, same, wait_for, Console, Env};

const MIB: u64 = 1 << 20;

/// Writes `len` random bytes at `off` of an image nothing else has open (qemu-io, so a
/// persistent dirty bitmap in the image records the write like a guest's would be).
fn fill_random(env: &Env, img: &Path, off: u64, len: u64) {
    let src = env.dir_path().join("random.bin");
    let mut f = std::fs::File::create(&src).unwrap();
    let copied = std::io::copy(&mut std::fs::File::open("/dev/urandom").unwrap().take(len), &mut f).unwrap();
    assert_eq!(copied, len);
    drop(f);
    common::qemu_io(img, &format!("write -q -s {} {off} {len}", src.display()));
    std::fs::remove_file(&src).unwrap();
}

/// Adds a data disk `data1` to a stopped VM; returns its image.
fn add_data_disk(env: &Env, vm: &str, size: &str) -> PathBuf {
    env.ok(&["disk", "add", vm, "--size", size, "--role", "data", "--name", "data1"]);
    disk_path(env, vm, 1)
}

/// The ids of a VM's backups, oldest first.
fn backup_ids(env: &Env, vm: &str) -> Vec<String> {
    env.json(&["backup", "list", vm])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores a backup as `name` and checks that each of its disks reads exactly like the
/// given images (the VM's disks in order).
fn assert_restores_to(env: &Env, id: &str, name: &str, disks: &[&Path]) {
    env.ok(&["backup", "restore", id, "--as", name]);
    for (i, d) in disks.iter().enumerate() {
        let r = disk_path(env, name, i);
        assert!(same(d, &r), "backup {id} disk {i} does not restore to {}", d.display());
    }
}

/// The qemu-storage-daemon processes of this environment (its paths are in their argv);
/// zombies do not count.
fn storage_daemons(env: &Env) -> Vec<i32> {
    let needle = env.dir_path().display().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmd);
        let argv0 = text.split('\0').next().unwrap_or("");
        if argv0.ends_with("qemu-storage-daemon") && text.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Kills the storage daemons an environment left behind, even when a test fails (declare it
/// after the `Env`, so it runs first).
struct NoStrays<'a>(&'a Env);

impl Drop for NoStrays<'_> {
    fn drop(&mut self) {
        for pid in storage_daemons(self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A corral command running in the background, its stderr (JSON progress lines with
/// `--json`) collected by a thread. Killed when dropped.
struct Bg {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn(env: &Env, args: &[&str]) -> Bg {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(vec![]));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    Bg {
        child,
        lines,
        reader: Some(reader),
    }
}

impl Bg {
    /// The last job progress reported: (done, total).
    fn progress(&self) -> Option<(u64, u64)> {
        let lines = self.lines.lock().unwrap();
        lines.iter().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["event"] == "job").then(|| (v["job"]["done"].as_u64().unwrap(), v["job"]["total"].as_u64().unwrap()))
        })
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the job has reported `at_least` bytes done and is still running:
    /// provably in the middle.
    fn wait_progress(&mut self, at_least: u64) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((done, total)) = self.progress() {
                if done >= at_least {
                    assert!(
                        done < total,
                        "the backup finished before the fault could hit it; give it more data"
                    );
                    return (done, total);
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "corral ended ({status}) before it reported {at_least} bytes done; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no progress to {at_least}: {:?}",
                self.progress()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "corral was killed, it did not end on its own: {status}"
        );
    }

    /// Waits for it to end: (status, stdout, stderr).
    fn finish(&mut self) -> (ExitStatus, String, String) {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).unwrap();
        }
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, out, self.stderr())
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error line corral printed last (`{"error": …}` with `--json`).
fn json_error(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["error"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no error line in corral's stderr:\n{stderr}"))
}

/// Files of the store's packs dir: (pack ids without an index, size of those, index count,
/// chunk entries in all indexes).
fn packs(store: &Path) -> (Vec<String>, u64, usize, u64) {
    let dir = store.join("packs");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut partial = vec![];
    let mut partial_bytes = 0;
    let mut indexes = 0;
    let mut entries = 0;
    for n in &names {
        if let Some(id) = n.strip_suffix(".pack") {
            if !names.contains(&format!("{id}.pidx")) {
                partial_bytes += std::fs::metadata(dir.join(n)).unwrap().len();
                partial.push(id.to_string());
            }
        } else if n.ends_with(".pidx") {
            indexes += 1;
            // magic 8, version 4, reserved 4, pack length 8, entry count 8 (store-format.md)
            let b = std::fs::read(dir.join(n)).unwrap();
            entries += u64::from_le_bytes(b[24..32].try_into().unwrap());
        }
    }
    (partial, partial_bytes, indexes, entries)
}

fn tmp_entries(store: &Path) -> usize {
    std::fs::read_dir(store.join("tmp")).map(|d| d.count()).unwrap_or(0)
}

/// After gc: verify passes and the packs hold exactly the chunks complete backups use.
fn assert_store_clean(env: &Env, store: &Path) {
    let v = env.json(&["backup", "verify", "--all"]);
    assert!(
        v["problems"].as_array().unwrap().is_empty() && v["broken"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let (partial, _, _, entries) = packs(store);
    assert!(partial.is_empty(), "packs without an index after gc: {partial:?}");
    assert_eq!(tmp_entries(store), 0, "tmp/ is empty after gc");
    assert_eq!(
        v["chunks_checked"].as_u64().unwrap(),
        entries,
        "every chunk in the packs is one a listed backup uses (verify checks exactly those)"
    );
}

/// Runs a shell command in the guest; the data is flushed to the disk (`conv=fsync` on the
/// block device), so it is in the image even if QEMU is killed afterwards.
fn guest_write(con: &mut Console, dev: &str, sector: u64, text: &str) {
    con.ok(&format!(
        "printf '%-32s' {text} | dd of={dev} bs=512 seek={sector} count=1 conv=sync,notrunc,fsync oflag=direct 2>/dev/null"
    ));
}

/// The 512 bytes `guest_write` puts on the disk for `text`.
fn written_sector(text: &str) -> Vec<u8> {
    let mut s = format!("{text:<32}").into_bytes();
    s.resize(512, 0);
    s
}

/// In the guest: copies the data disk's first `mib` MiB to byte offset `to`. With `to` not a
/// multiple of the 64 KiB chunk size every copied chunk is new to the store, so the next
/// backup has that much to read and store.
fn guest_shifted_copy(con: &mut Console, mib: u64, to: u64) {
    con.ok(&format!(
        "dd if=/dev/vdb of=/dev/vdb bs=1M count={mib} seek={to} iflag=direct oflag=direct,seek_bytes conv=notrunc,fsync 2>&1"
    ));
}

/// The pid of a running VM's QEMU.
fn qemu_pid(env: &Env, vm: &str) -> i32 {
    let p = std::fs::read_to_string(env.vm_run(vm).join("qemu.pid")).unwrap();
    p.trim().parse().unwrap()
}

/// Kill -9 of corral in the middle of backing up a stopped VM (read through the
/// qemu-storage-daemon corral starts): the daemon must not outlive it holding the disks,
/// nothing partial is listed, the next backup is a correct incremental (changes made after
/// the killed backup's point in time included), and gc frees exactly the debris.
#[test]
fn corral_killed_while_backing_up_a_stopped_vm() {
    let env = Env::new();
    let _strays = NoStrays(&env);
    env.create_guest("cold", "");
    let system = disk_path(&env, "cold", 0);
    let data = add_data_disk(&env, "cold", "640M");
    common::qemu_io(&system, "write -q -P 0x11 0 1M");
    fill_random(&env, &data, 0, 8 * MIB);
    let first = env.json(&["backup", "run", "cold"]);
    assert_eq!(first[0]["kind"], "full", "{first}");
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let store = env.data_dir().join("backups");
    let (_, _, indexes_before, _) = packs(&store);

    // 512 MiB of new data: long enough that the kill lands in the middle even though the
    // read path hashes and compresses on both cores.
    fill_random(&env, &data, 16 * MIB, 512 * MIB);
    let mut bg = spawn(&env, &["backup", "run", "cold", "--json"]);
    bg.wait_progress(1);
    // Meanwhile a second backup of the VM is refused as busy, and changes nothing.
    let out = env.run(&["backup", "run", "cold"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "busy: {err}");
    assert!(err.contains("busy") && err.contains("backup"), "{err}");
    // Past the unchanged system disk (64M) and 200 MiB of data1's 640M (progress counts the
    // disk's size): about 160 MiB of the 512 read, so a pack (64 MiB) is complete and
    // published (packs are made durable on a thread of their own) and one is not.
    let (done, total) = bg.wait_progress(64 * MIB + 200 * MIB);
    let daemons = storage_daemons(&env);
    assert_eq!(daemons.len(), 1, "one qemu-storage-daemon serves the export");
    bg.kill9();
    eprintln!("killed corral at {done} of {total} bytes");

    assert!(
        wait_for(Duration::from_secs(10), || storage_daemons(&env).is_empty()).is_ok(),
        "qemu-storage-daemon {:?} outlived the corral that started it and still holds cold's disks",
        storage_daemons(&env)
    );
    assert_eq!(
        backup_ids(&env, "cold"),
        std::slice::from_ref(&first_id),
        "nothing partial is listed"
    );
    let jobs = env.json(&["job", "list", "--vm", "cold"]);
    let mut states: Vec<(i64, &str)> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup")
        .map(|j| (j["id"].as_i64().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    states.sort();
    let states: Vec<&str> = states.into_iter().map(|s| s.1).collect();
    assert_eq!(states, ["succeeded", "interrupted"], "{jobs}");
    let (partial, partial_bytes, indexes, _) = packs(&store);
    assert!(
        !partial.is_empty() && indexes > indexes_before,
        "the kill left a partial pack and a complete one no backup uses (else gc is not tested): {partial:?}, {indexes} indexes"
    );

    // The images are free again (qemu-io takes their write lock), and these writes come after
    // the killed backup's point in time: only the bitmap it started has seen them.
    common::qemu_io(&data, "write -q -P 0x5a 300M 64k");
    common::qemu_io(&system, "write -q -P 0x22 2M 64k");
    let next = env.json(&["backup", "run", "cold"]);
    assert_eq!(next[0]["kind"], "incremental", "the old bitmap is still good: {next}");
    let next_id = next[0]["id"].as_str().unwrap().to_string();
    assert_eq!(backup_ids(&env, "cold"), [first_id, next_id.clone()]);
    assert_restores_to(&env, &next_id, "r1", &[&system, &data]);

    let gc = env.json(&["store", "gc"]);
    assert!(
        gc["bytes_freed"].as_u64().unwrap() >= partial_bytes && gc["debris_files"].as_u64().unwrap() >= 1,
        "gc frees the killed backup's partial pack ({partial_bytes} bytes): {gc}"
    );
    assert_store_clean(&env, &store);
    assert!(storage_daemons(&env).is_empty());
}

/// Unmounts when dropped (even when the test fails).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn free_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// A store on a small filesystem: the first backup fits, the second does not. It fails with
/// an error that says so and what to do, earlier backups stay listed, verified and
/// restorable, gc gives the space back, and a backup that fits works again (incremental:
/// the failed one handed its changes back to the bitmap).
#[test]
fn store_filesystem_fills_up() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n!!!!!!!! SKIPPED store_filesystem_fills_up: not root, cannot mount a tmpfs !!!!!!!!\n");
        return;
    }
    let mnt = tempfile::Builder::new().prefix("ctfull").tempdir_in("/tmp").unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48M", "tmpfs"])
        .arg(mnt.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount -t tmpfs failed (as root)");
    let _m = Mount(mnt.path().to_path_buf());
    let store = mnt.path().join("store");
    let env = Env::with_config(&format!("[backup]\nstore = \"{}\"\n", store.display()));
    let _strays = NoStrays(&env);
    env.create_guest("fill", "");
    let system = disk_path(&env, "fill", 0);
    let data = add_data_disk(&env, "fill", "96M");

    // The store is created on first use; small packs (store.json's pack_target), so the
    // failing backup completes some before the filesystem is full.
    env.ok(&["store", "init"]);
    let sj = store.join("store.json");
    let mut settings: serde_json::Value = serde_json::from_slice(&std::fs::read(&sj).unwrap()).unwrap();
    settings["pack_target"] = (4 * MIB).into();
    std::fs::write(&sj, serde_json::to_vec(&settings).unwrap()).unwrap();

    fill_random(&env, &data, 0, 16 * MIB);
    let first = env.json(&["backup", "run", "fill"]);
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let kept = env.dir_path().join("data1-at-first.qcow2");
    std::fs::copy(&data, &kept).unwrap();
    let free_before = free_bytes(mnt.path());

    // 64 MiB of new random data cannot fit into the ~30 MiB left.
    fill_random(&env, &data, 16 * MIB, 64 * MIB);
    assert!(free_before < 64 * MIB, "{free_before}");
    let out = env.run(&["backup", "run", "fill"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a backup bigger than the filesystem succeeded?");
    assert!(
        err.contains("no space left") && err.contains("earlier backups are intact") && err.contains("gc"),
        "the error names the problem and what to do: {err}"
    );
    eprintln!("full store: {}", err.trim());

    assert_eq!(
        backup_ids(&env, "fill"),
        std::slice::from_ref(&first_id),
        "nothing partial is listed"
    );
    let v = env.json(&["backup", "verify", "--all"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_restores_to(&env, &first_id, "r1", &[&system, &kept]);

    let gc = env.json(&["store", "gc"]);
    assert!(
        gc["bytes_freed"].as_u64().unwrap() > 0,
        "the failed backup's packs: {gc}"
    );
    let free_after = free_bytes(mnt.path());
    assert!(
        free_after + MIB >= free_before,
        "the space is back after gc: {free_after} free, {free_before} before the failed backup"
    );
    assert_store_clean(&env, &store);

    // Most of the new data gone again: the next backup fits, and reads what changed since
    // the first backup (the failed one gave its changes back).
    common::qemu_io(&data, "write -q -z 24M 56M");
    let next = env.json(&["backup", "run", "fill"]);
    assert_eq!(next[0]["kind"], "incremental", "{next}");
    assert!(next[0]["stats"]["bytes_read"].as_u64().unwrap() >= 64 * MIB, "{next}");
    assert_restores_to(&env, next[0]["id"].as_str().unwrap(), "r2", &[&system, &data]);
    assert!(storage_daemons(&env).is_empty());
}

/// A running guest: corral killed in the middle of a live incremental (its export is left in
/// QEMU), then the VM dying under a backup (QEMU killed), then the guest powering itself off
/// under one. Each interrupted backup is not listed; every following backup works and
/// restores to exactly the disks.
#[test]
fn live_backup_interrupted() {
    let env = Env::new();
    let _strays = NoStrays(&env);
    env.create_guest("lv", "");
    let system = disk_path(&env, "lv", 0);
    let data = add_data_disk(&env, "lv", "320M");
    fill_random(&env, &data, 0, 160 * MIB);
    env.ok(&["vm", "start", "lv"]);
    env.wait_ready("lv", 1);
    let mut con = env.console("lv");
    let full = env.json(&["backup", "run", "lv"]);
    assert_eq!(full[0]["kind"], "full", "{full}");
    let mut listed = vec![full[0]["id"].as_str().unwrap().to_string()];

    // 1. corral killed in the middle of a live incremental of 150 MiB of new chunks.
    guest_shifted_copy(&mut con, 150, 165 * MIB + 40 * 1024);
    let mut bg = spawn(&env, &["backup", "run", "lv", "--json"]);
    let (done, total) = bg.wait_progress(64 * MIB + 100 * MIB);
    bg.kill9();
    eprintln!("killed corral at {done} of {total} bytes");
    assert_eq!(backup_ids(&env, "lv"), listed, "nothing partial is listed");
    // Written after the killed backup's point in time.
    guest_write(&mut con, "/dev/vda", 100, "AFTER-KILL");
    guest_write(&mut con, "/dev/vdb", 319 * 2048, "AFTER-KILL");
    let next = env.json(&["backup", "run", "lv"]);
    assert_eq!(next[0]["kind"], "incremental", "{next}");
    listed.push(next[0]["id"].as_str().unwrap().to_string());
    assert_eq!(backup_ids(&env, "lv"), listed);
    assert_eq!(env.state("lv"), "running");

    // 2. QEMU dies in the middle of a backup (a crash, the OOM killer).
    let mut bg = spawn(&env, &["backup", "run", "lv", "--full", "--json"]);
    bg.wait_progress(64 * MIB + 64 * MIB);
    // A stop is refused while the backup holds the VM.
    let out = env.run(&["vm", "stop", "lv", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("busy") && err.contains("backup"), "{err}");
    let pid = qemu_pid(&env, "lv");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (status, _, stderr) = bg.finish();
    let msg = json_error(&stderr);
    eprintln!("backup under a killed QEMU: {status}: {msg}");
    assert!(
        !status.success(),
        "the backup cannot have completed after its source died"
    );
    assert!(msg.contains("lv") && !stderr.contains("panicked"), "{msg}");
    assert_eq!(backup_ids(&env, "lv"), listed, "nothing partial is listed");
    // The VM crashed: the next backup says what to do first; after that it works, reading in
    // full (the killed QEMU never stored the newest bitmap, and left the older one
    // inconsistent).
    let out = env.run(&["backup", "run", "lv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("crashed") && err.contains("corral vm kill lv"), "{err}");
    env.ok(&["vm", "kill", "lv"]);
    let after = env.json(&["backup", "run", "lv"]);
    assert_eq!(after[0]["kind"], "full", "{after}");
    assert!(after[0]["fell_back"].as_str().unwrap().contains("bitmap"), "{after}");
    listed.push(after[0]["id"].as_str().unwrap().to_string());
    // Nothing was written since the incremental after the first kill: it and the fallback
    // both restore to exactly the disks.
    assert_restores_to(&env, &listed[1], "r1", &[&system, &data]);
    assert_restores_to(&env, &listed[2], "r2", &[&system, &data]);

    // 3. The guest powers itself off in the middle of a live incremental: QEMU ends cleanly
    //    under it.
    drop(con);
    env.ok(&["vm", "start", "lv"]);
    env.wait_ready("lv", 2);
    let mut con = env.console("lv");
    guest_shifted_copy(&mut con, 150, 165 * MIB + 20 * 1024);
    let mut bg = spawn(&env, &["backup", "run", "lv", "--json"]);
    bg.wait_progress(64 * MIB + 32 * MIB);
    // After the point in time, on a sector that was empty before.
    let during = 318 * 2048;
    guest_write(&mut con, "/dev/vdb", during, "DURING-BACKUP");
    drop(con);
    let mut s = UnixStream::connect(env.vm_run("lv").join("serial.sock")).unwrap();
    writeln!(s, "9999 poweroff -f").unwrap();
    let (status, out, stderr) = bg.finish();
    assert!(
        wait_for(Duration::from_secs(30), || env.state("lv") == "stopped").is_ok(),
        "the guest powered off"
    );
    if status.success() {
        // It finished reading before QEMU went: then it is the disks at its point in time,
        // which had no DURING-BACKUP yet.
        let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        eprintln!("the backup completed before the guest powered off");
        listed.push(id.clone());
        env.ok(&["backup", "restore", &id, "--as", "r3"]);
        let r3 = disk_path(&env, "r3", 1);
        assert!(
            common::pattern_at(&r3, during * 512, 512, 0),
            "DURING-BACKUP came later"
        );
        let marker = env.dir_path().join("during.bin");
        std::fs::write(&marker, written_sector("DURING-BACKUP")).unwrap();
        common::qemu_io(&r3, &format!("write -q -s {} {} 512", marker.display(), during * 512));
        assert!(same(&r3, &data), "otherwise the backup is the data disk");
        assert!(same(&disk_path(&env, "r3", 0), &system));
    } else {
        let msg = json_error(&stderr);
        eprintln!("backup under a guest powering off: {status}: {msg}");
        assert!(msg.contains("lv"), "{msg}");
    }
    assert_eq!(backup_ids(&env, "lv"), listed, "only a complete backup is listed");
    // The stopped VM's next backup works and holds everything, DURING-BACKUP included.
    let last = env.json(&["backup", "run", "lv"]);
    eprintln!("after the power-off: {}", last[0]["kind"]);
    assert_restores_to(&env, last[0]["id"].as_str().unwrap(), "r4", &[&system, &data]);
    assert!(storage_daemons(&env).is_empty());
}

/// Unknown backup ids, tags and VMs, and a restore onto a running VM's name: each fails with
/// exit code 2 (bad input) and a clear message, and changes nothing.
#[test]
fn unknown_ids_tags_vms_and_restore_over_a_running_vm() {
    let env = Env::new();
    env.boot_guest("up", "");
    let id = env.json(&["backup", "run", "up"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = common::tree_digest(&env.data_dir());
    let cases: &[(&[&str], &[&str])] = &[
        (&["backup", "show", "nosuchid"], &["no backup nosuchid", "backup list"]),
        (
            &["backup", "verify", "nosuchid"],
            &["\"nosuchid\" is neither a backup id nor a VM", "backup list"],
        ),
        (
            &["backup", "drill", "nosuchid", "--expect-line", "X", "--timeout", "5s"],
            &["no backup nosuchid", "backup list"],
        ),
        (
            &["backup", "restore", "nosuchid", "--as", "new1"],
            &["no backup nosuchid", "backup list"],
        ),
        (
            &["backup", "run", "--tag", "nosuchtag"],
            &["no VM has the tag \"nosuchtag\""],
        ),
        (&["backup", "run", "nosuchvm"], &["no VM named nosuchvm"]),
        (&["backup", "restore", &id, "--as", "up"], &["up", "already exists"]),
    ];
    for (args, needles) in cases {
        for json in [false, true] {
            let mut a = args.to_vec();
            if json {
                a.push("--json");
            }
            let out = env.run(&a);
            let mut err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(out.status.code(), Some(2), "corral {a:?}: {err}");
            if json {
                let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
                assert!(v["kind"].is_string(), "{v}");
                err = v["error"].as_str().unwrap().to_string();
            }
            for n in *needles {
                assert!(err.contains(n), "corral {a:?} should say {n:?}: {err}");
            }
        }
    }
    assert_eq!(common::tree_digest(&env.data_dir()), before, "nothing changed");
    assert_eq!(env.state("up"), "running", "the running VM was not touched");
    assert_eq!(backup_ids(&env, "up"), [id]);
}
