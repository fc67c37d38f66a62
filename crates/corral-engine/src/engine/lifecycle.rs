//! start, stop, kill, pause, resume.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use corral_qmp::{Qmp, QmpError};
use corral_types::{Accel, BootFrom, DisplayMode, RunState, StopOutcome, VmSpec};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::define::check_files;
use super::state::{clear_runtime, has_saved_state, live_pid, observe, query_vnc, uuid_of};
use super::Engine;
use crate::error::EngineError;
use crate::paths::{ensure_dir, VmPaths};
use crate::process::{find_binary, lookup_user, send_signal, spawn_detached, tail_lines, wait_gone, RunAs};
use crate::qemu_args::{qemu_argv, LaunchPlan};

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartInfo {
    pub name: String,
    pub pid: u32,
    /// `127.0.0.1:5900` when the VM has a VNC display.
    pub vnc: Option<String>,
    /// The VM came back from a saved state rather than booting.
    pub resumed: bool,
    /// From spawning QEMU until its monitor answered (and, on resume, the state was loaded).
    pub millis: u64,
}

fn wrong(spec: &VmSpec, state: RunState, hint: impl Into<String>) -> EngineError {
    EngineError::WrongState {
        name: spec.name.to_string(),
        state,
        hint: hint.into(),
    }
}

impl Engine {
    fn run_as(&self) -> Result<Option<RunAs>, EngineError> {
        match &self.cfg.qemu.user {
            Some(u) if nix::unistd::geteuid().is_root() => lookup_user(u).map(Some),
            _ => Ok(None),
        }
    }

    /// Everything `start` checks before it touches anything.
    fn preflight(&self, spec: &VmSpec, paths: &VmPaths) -> Result<(String, Accel), EngineError> {
        let binary = find_binary(&self.cfg.qemu.binary)?.display().to_string();
        // Unix socket addresses hold at most 107 bytes.
        let longest = paths.qmp_status();
        if longest.as_os_str().len() > 107 {
            return Err(EngineError::Config {
                path: longest.clone(),
                message: format!(
                    "this socket path is {} bytes, longer than the 107 a unix socket allows; set a shorter run_dir",
                    longest.as_os_str().len()
                ),
            });
        }
        check_files(spec, paths, true)?;
        let accel = self.cfg.resolve_accel(spec.accel);
        if accel == Accel::Kvm
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_err()
        {
            return Err(wrong(spec, RunState::Stopped, "it asks for KVM but /dev/kvm cannot be opened; load the kvm module, add the user to the kvm group, or set accel = \"tcg\""));
        }
        if spec.display.mode == DisplayMode::Vnc {
            if let Some(port) = spec.display.vnc_port {
                if TcpListener::bind(("127.0.0.1", port)).is_err() {
                    return Err(EngineError::VncPortInUse {
                        name: spec.name.to_string(),
                        port,
                    });
                }
            }
        }
        Ok((binary, accel))
    }

    /// Starts a stopped VM (booting it) or a saved one (resuming its saved state).
    pub async fn start(&self, name: &str) -> Result<StartInfo, EngineError> {
        let record = self.get(name)?;
        let _lock = self.lock(&record.spec.name, "start")?;
        let paths = self.paths(&record.spec.name);
        let o = observe(&record.spec, &paths).await;
        match o.state {
            RunState::Running | RunState::Paused => {
                return Err(wrong(
                    &record.spec,
                    o.state,
                    format!("it is already running (pid {}); nothing to start", o.pid.unwrap_or(0)),
                ));
            }
            RunState::Crashed => {
                tracing::warn!(vm = %record.spec.name, "clearing the leftovers of a crashed QEMU");
                clear_runtime(&paths);
            }
            RunState::Saved if o.pid.is_some() => {
                // A resume was interrupted (corral killed while QEMU waited for the state):
                // that QEMU holds nothing yet, so end it and resume afresh.
                let pid = o.pid.unwrap_or(0);
                send_signal(pid, Signal::SIGKILL);
                wait_gone(pid, &uuid_of(&record.spec), Duration::from_secs(5)).await;
                clear_runtime(&paths);
            }
            _ => {}
        }
        // A crashed QEMU may have been a resume that never finished: the state is still good.
        if o.state == RunState::Saved || (o.state == RunState::Crashed && has_saved_state(&paths)) {
            return self.resume_saved(&record.spec, &paths).await;
        }
        let info = self.launch(&record.spec, &paths, false).await?;
        if record.spec.boot_from() == BootFrom::CdromOnce {
            // The CD-ROM boot was the "once"; later starts boot the disk.
            let mut spec = record.spec.clone();
            spec.boot.from = BootFrom::Disk;
            if let Err(e) = self.reg().update(&spec, record.generation) {
                tracing::warn!(vm = %spec.name, "could not switch boot back to disk: {e}");
            }
        }
        Ok(info)
    }

    /// Spawns QEMU for `spec` and waits until its monitor answers. On failure nothing is
    /// left running and the run dir is clean.
    pub(crate) async fn launch(
        &self,
        spec: &VmSpec,
        paths: &VmPaths,
        incoming: bool,
    ) -> Result<StartInfo, EngineError> {
        let (binary, accel) = self.preflight(spec, paths)?;
        let run_as = self.run_as()?;
        ensure_dir(&paths.run, 0o700).map_err(EngineError::io(&paths.run))?;
        ensure_dir(&paths.data, 0o700).map_err(EngineError::io(&paths.data))?;
        if let Some(ra) = run_as {
            self.hand_over(spec, paths, ra)?;
        }
        clear_runtime(paths);
        let argv = qemu_argv(
            spec,
            &LaunchPlan {
                binary: &binary,
                accel,
                paths,
                incoming,
            },
        );
        let t0 = Instant::now();
        let mut child = spawn_detached(&argv, &paths.qemu_log(), &paths.pidfile(), run_as).map_err(|e| match e {
            EngineError::StartFailed { message, .. } => EngineError::StartFailed {
                name: spec.name.to_string(),
                message,
            },
            other => other,
        })?;
        let deadline = t0 + self.cfg.lifecycle.start_timeout.0;
        let qmp_path = paths.qmp();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                clear_runtime(paths);
                return Err(self.start_error(spec, paths, &status.to_string()));
            }
            if qmp_path.exists() {
                match Qmp::connect(&qmp_path).await {
                    Ok(qmp) => {
                        let vnc = match spec.display.mode {
                            DisplayMode::Vnc => query_vnc(&qmp).await,
                            DisplayMode::None => None,
                        };
                        let pid = child.id();
                        drop(qmp);
                        return Ok(StartInfo {
                            name: spec.name.to_string(),
                            pid,
                            vnc,
                            resumed: false,
                            millis: t0.elapsed().as_millis() as u64,
                        });
                    }
                    Err(e) => tracing::trace!("monitor not ready: {e}"),
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                clear_runtime(paths);
                return Err(EngineError::Timeout {
                    what: format!("the QEMU monitor of {} (see {})", spec.name, paths.qemu_log().display()),
                    seconds: self.cfg.lifecycle.start_timeout.0.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Turns QEMU's last words into a clear error.
    fn start_error(&self, spec: &VmSpec, paths: &VmPaths, status: &str) -> EngineError {
        let lines: Vec<String> = tail_lines(&paths.qemu_log(), 20)
            .into_iter()
            .filter(|l| !l.starts_with("corral: "))
            .collect();
        let text = lines.join("\n");
        if text.contains("Failed to find an available port") || text.contains("Address already in use") {
            if let Some(port) = spec.display.vnc_port {
                return EngineError::VncPortInUse {
                    name: spec.name.to_string(),
                    port,
                };
            }
        }
        let last = lines
            .last()
            .cloned()
            .unwrap_or_else(|| format!("it exited ({status}) without a message"));
        // Drop QEMU's timestamp prefix for readability.
        let last = last
            .split_once(" qemu-system")
            .map(|(_, r)| format!("qemu-system{r}"))
            .unwrap_or(last);
        EngineError::StartFailed {
            name: spec.name.to_string(),
            message: format!("{last} (full log: {})", paths.qemu_log().display()),
        }
    }

    /// With `[qemu] user`, hands a file corral made for a running QEMU (a new overlay, a layer
    /// a merge writes into) to that user.
    pub(crate) fn give_to_qemu(&self, path: &std::path::Path) -> Result<(), EngineError> {
        use nix::unistd::{chown, Gid, Uid};
        if let Some(ra) = self.run_as()? {
            chown(path, Some(Uid::from_raw(ra.uid)), Some(Gid::from_raw(ra.gid)))
                .map_err(|e| EngineError::io(path)(e.into()))?;
        }
        Ok(())
    }

    /// With `[qemu] user`, QEMU must own its run dir and be able to write its disks and logs.
    fn hand_over(&self, spec: &VmSpec, paths: &VmPaths, ra: RunAs) -> Result<(), EngineError> {
        use nix::unistd::{chown, Gid, Uid};
        use std::os::unix::fs::PermissionsExt;
        let (u, g) = (Some(Uid::from_raw(ra.uid)), Some(Gid::from_raw(ra.gid)));
        // QEMU must be able to reach its own directories: traverse (not list) the parents.
        for dir in [&self.cfg.data_dir, &self.cfg.run_dir] {
            for d in [dir.clone(), dir.join("vms")] {
                if let Ok(m) = std::fs::metadata(&d) {
                    let mode = m.permissions().mode();
                    if mode & 0o011 != 0o011 {
                        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o011))
                            .map_err(EngineError::io(&d))?;
                    }
                }
            }
        }
        let mut files = vec![
            paths.run.clone(),
            paths.data.clone(),
            paths.console_log(),
            paths.qemu_log(),
        ];
        files.extend(spec.disks.iter().filter_map(|d| d.path.clone()));
        // Layers below the active one may live in another VM's directory (a linked clone's
        // base): QEMU only reads them, so it needs to traverse (not list) that directory.
        for d in &spec.disks {
            let Some(top) = &d.path else { continue };
            for layer in self.img_chain(top).unwrap_or_default().iter().skip(1) {
                let Some(dir) = layer.filename.parent() else { continue };
                if dir.starts_with(&self.cfg.data_dir) && dir != paths.data {
                    if let Ok(m) = std::fs::metadata(dir) {
                        let mode = m.permissions().mode();
                        if mode & 0o011 != 0o011 {
                            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
                                .map_err(EngineError::io(dir))?;
                        }
                    }
                }
            }
        }
        for f in files {
            if f.exists() {
                chown(&f, u, g).map_err(|e| EngineError::io(&f)(e.into()))?;
            }
        }
        Ok(())
    }

    /// Connects to the operations monitor of a running VM.
    pub(crate) async fn monitor(&self, spec: &VmSpec, paths: &VmPaths) -> Result<Qmp, EngineError> {
        match tokio::time::timeout(Duration::from_secs(10), Qmp::connect(paths.qmp())).await {
            Ok(r) => r.map_err(EngineError::qmp(spec.name.as_str())),
            Err(_) => Err(EngineError::Timeout {
                what: format!("the QEMU monitor of {}", spec.name),
                seconds: 10,
            }),
        }
    }

    /// ACPI power-off, then a hard stop after `timeout` (or at once with `force`).
    pub async fn stop(&self, name: &str, timeout: Option<Duration>, force: bool) -> Result<StopOutcome, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "stop")?;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        match o.state {
            RunState::Stopped => return Err(wrong(&spec, o.state, "it is not running; nothing to stop")),
            RunState::Saved => {
                return Err(wrong(
                    &spec,
                    o.state,
                    format!(
                        "it is not running (its memory is saved to disk); `corral vm start {}` resumes it",
                        spec.name
                    ),
                ))
            }
            RunState::Crashed => {
                clear_runtime(&paths);
                return Ok(StopOutcome {
                    name: spec.name.to_string(),
                    guest_initiated: false,
                    forced: false,
                    millis: 0,
                });
            }
            _ => {}
        }
        let pid = o.pid.unwrap_or(0);
        let timeout = timeout.unwrap_or(self.cfg.lifecycle.stop_timeout.0);
        self.stop_process(&spec, &paths, pid, timeout, force).await
    }

    pub(crate) async fn stop_process(
        &self,
        spec: &VmSpec,
        paths: &VmPaths,
        pid: u32,
        timeout: Duration,
        force: bool,
    ) -> Result<StopOutcome, EngineError> {
        let t0 = Instant::now();
        let uuid = uuid_of(spec);
        let mut guest_initiated = false;
        let mut forced = force;
        match self.monitor(spec, paths).await {
            Ok(qmp) => {
                let mut events = qmp.events();
                if !force {
                    // A paused guest cannot see the power button: let it run to shut down.
                    let was_paused = qmp
                        .execute("query-status", None)
                        .await
                        .ok()
                        .and_then(|v| v.get("running").and_then(|r| r.as_bool()))
                        == Some(false);
                    let _ = qmp.execute("cont", None).await;
                    if let Err(e) = qmp.execute("system_powerdown", None).await {
                        // Leave a paused VM paused, as it was.
                        if was_paused {
                            let _ = qmp.execute("stop", None).await;
                        }
                        return Err(EngineError::qmp(spec.name.as_str())(e));
                    }
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        tokio::select! {
                            ev = events.recv() => match ev {
                                Ok(ev) if ev.name == "SHUTDOWN" => {
                                    guest_initiated = ev.data.get("guest").and_then(|g| g.as_bool()).unwrap_or(false);
                                }
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => break,
                            },
                            _ = qmp.closed() => break, // the monitor closed: QEMU is exiting
                            _ = tokio::time::sleep_until(deadline) => { forced = true; break; }
                        }
                    }
                }
                if forced && !qmp.is_closed() {
                    tracing::info!(vm = %spec.name, "guest did not power off in time; ending QEMU");
                    let _ = qmp.execute("quit", None).await;
                }
            }
            Err(e) => {
                tracing::warn!(vm = %spec.name, "monitor unreachable ({e}); sending SIGTERM");
                forced = true;
                send_signal(pid, Signal::SIGTERM);
            }
        }
        if !wait_gone(pid, &uuid, Duration::from_secs(15)).await {
            tracing::warn!(vm = %spec.name, "QEMU did not exit; killing it");
            send_signal(pid, Signal::SIGKILL);
            forced = true;
            wait_gone(pid, &uuid, Duration::from_secs(10)).await;
        }
        clear_runtime(paths);
        Ok(StopOutcome {
            name: spec.name.to_string(),
            guest_initiated,
            forced,
            millis: t0.elapsed().as_millis() as u64,
        })
    }

    /// Ends QEMU at once with SIGKILL (the guest gets no chance to flush).
    pub async fn kill(&self, name: &str) -> Result<(), EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "kill")?;
        let paths = self.paths(&spec.name);
        match live_pid(&spec, &paths) {
            Some(pid) => {
                send_signal(pid, Signal::SIGKILL);
                if !wait_gone(pid, &uuid_of(&spec), Duration::from_secs(10)).await {
                    return Err(EngineError::op(
                        name,
                        "kill",
                        format!("QEMU (pid {pid}) is still alive after SIGKILL"),
                    ));
                }
                clear_runtime(&paths);
                Ok(())
            }
            None => {
                let o = observe(&spec, &paths).await;
                if o.state == RunState::Crashed {
                    clear_runtime(&paths);
                    return Ok(());
                }
                Err(wrong(&spec, o.state, "it is not running; nothing to kill"))
            }
        }
    }

    /// Pauses the vCPUs (QEMU keeps the memory).
    pub async fn pause(&self, name: &str) -> Result<(), EngineError> {
        self.run_control(name, "pause", "stop", RunState::Running).await
    }

    /// Resumes a paused VM; for a saved VM, this is `start`.
    pub async fn resume(&self, name: &str) -> Result<Option<StartInfo>, EngineError> {
        let spec = self.get_spec(name)?;
        if observe(&spec, &self.paths(&spec.name)).await.state == RunState::Saved {
            return self.start(name).await.map(Some);
        }
        self.run_control(name, "resume", "cont", RunState::Paused)
            .await
            .map(|_| None)
    }

    async fn run_control(&self, name: &str, op: &str, cmd: &str, need: RunState) -> Result<(), EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, op)?;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        if o.state != need {
            let hint = match (op, o.state) {
                ("pause", RunState::Paused) => "it is already paused".to_string(),
                ("resume", RunState::Running) => "it is already running".to_string(),
                _ => format!("{op} needs a {need} VM"),
            };
            return Err(wrong(&spec, o.state, hint));
        }
        let qmp = self.monitor(&spec, &paths).await?;
        qmp.execute(cmd, None)
            .await
            .map_err(|e: QmpError| EngineError::op(name, op, e.to_string()))?;
        Ok(())
    }
}
