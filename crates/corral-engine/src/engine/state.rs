//! Runtime state, derived afresh every time from the pidfile, the process and QMP.
//!
//! | pidfile | process (our UUID) | saved state | → state |
//! |---------|--------------------|-------------|---------|
//! | yes     | alive              | –           | QEMU's run status: running, paused (or saved while a resume is still waiting for its state) |
//! | yes     | gone               | –           | crashed (QEMU removes its pidfile on every clean exit) |
//! | no      | –                  | yes         | saved |
//! | no      | –                  | no          | stopped |

use std::time::Duration;

use corral_qmp::Qmp;
use corral_types::{RunState, VmSpec, VmStatus};
use serde::Deserialize;

use super::Engine;
use crate::error::EngineError;
use crate::paths::VmPaths;
use crate::process::{is_our_qemu, read_pidfile, tail_lines, uptime_seconds};

/// The VNC address QEMU listens on, if any.
pub(crate) async fn query_vnc(qmp: &Qmp) -> Option<String> {
    let v = qmp.execute("query-vnc", None).await.ok()?;
    if !v.get("enabled")?.as_bool()? {
        return None;
    }
    Some(format!("{}:{}", v.get("host")?.as_str()?, v.get("service")?.as_str()?))
}

/// What the engine sees of a VM right now.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub state: RunState,
    pub pid: Option<u32>,
    pub qemu_status: Option<String>,
    pub vnc: Option<String>,
}

impl Observed {
    /// A VM with no QEMU.
    fn idle(state: RunState) -> Observed {
        Observed {
            state,
            pid: None,
            qemu_status: None,
            vnc: None,
        }
    }
}

#[derive(Deserialize)]
struct QueryStatus {
    status: String,
}

pub(crate) fn uuid_of(spec: &VmSpec) -> String {
    spec.uuid.map(|u| u.to_string()).unwrap_or_default()
}

/// The pid of the VM's live QEMU, if there is one.
pub(crate) fn live_pid(spec: &VmSpec, paths: &VmPaths) -> Option<u32> {
    let pid = read_pidfile(&paths.pidfile())?;
    is_our_qemu(pid, &uuid_of(spec)).then_some(pid)
}

pub(crate) fn has_saved_state(paths: &VmPaths) -> bool {
    paths.saved_state().exists() && paths.saved_meta().exists()
}

/// Asks QEMU (on the status monitor) for its run status and VNC address.
async fn query(paths: &VmPaths) -> Option<(String, Option<String>)> {
    let work = async {
        let qmp = Qmp::connect(paths.qmp_status()).await.ok()?;
        let st: QueryStatus = qmp.execute_as("query-status", None).await.ok()?;
        let vnc = query_vnc(&qmp).await;
        Some((st.status, vnc))
    };
    tokio::time::timeout(Duration::from_secs(2), work).await.ok().flatten()
}

/// What the pidfile, /proc and the saved state say, without asking QEMU: the state of a VM
/// that has no live QEMU, or else (`Err`) the pid of the one it has.
pub(crate) fn observe_files(spec: &VmSpec, paths: &VmPaths) -> Result<Observed, u32> {
    let state = match read_pidfile(&paths.pidfile()) {
        Some(pid) if is_our_qemu(pid, &uuid_of(spec)) => return Err(pid),
        Some(_) => RunState::Crashed,
        None if has_saved_state(paths) => RunState::Saved,
        None => RunState::Stopped,
    };
    Ok(Observed::idle(state))
}

/// The state of a VM whose QEMU is alive, from QEMU's run status (`None`: it did not answer).
pub(crate) fn live_state(qemu_status: Option<&str>, paths: &VmPaths) -> RunState {
    match qemu_status {
        Some("running") | None => RunState::Running,
        Some("inmigrate") | Some("prelaunch") if has_saved_state(paths) => RunState::Saved,
        Some(_) => RunState::Paused,
    }
}

/// The state of a VM whose QEMU (`pid`) is alive, from QEMU's own run status.
async fn observe_live(pid: u32, paths: &VmPaths) -> Observed {
    let (qemu_status, vnc) = match query(paths).await {
        Some((s, v)) => (Some(s), v),
        None => (None, None),
    };
    let state = live_state(qemu_status.as_deref(), paths);
    Observed {
        state,
        pid: Some(pid),
        qemu_status,
        vnc,
    }
}

pub(crate) async fn observe(spec: &VmSpec, paths: &VmPaths) -> Observed {
    match observe_files(spec, paths) {
        Ok(o) => o,
        Err(pid) => observe_live(pid, paths).await,
    }
}

/// The last lines of the QEMU log and the serial console, for crash reports.
pub(crate) fn last_log(paths: &VmPaths, n: usize) -> Vec<String> {
    let mut out: Vec<String> = tail_lines(&paths.qemu_log(), n)
        .into_iter()
        .map(|l| format!("qemu: {l}"))
        .collect();
    out.extend(
        tail_lines(&paths.console_log(), n)
            .into_iter()
            .map(|l| format!("console: {l}")),
    );
    out
}

/// Removes what a dead QEMU left in the run dir (pidfile, sockets).
pub(crate) fn clear_runtime(paths: &VmPaths) {
    for p in [
        paths.pidfile(),
        paths.qmp(),
        paths.qmp_status(),
        paths.serial_sock(),
        paths.qga_sock(),
        paths.layout_changes(),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

impl Engine {
    pub(crate) fn status_from(&self, spec: &VmSpec, o: Observed) -> VmStatus {
        VmStatus {
            name: spec.name.to_string(),
            uuid: uuid_of(spec),
            state: o.state,
            cpus: spec.cpus,
            memory: spec.memory.0,
            tags: spec.tags.clone(),
            autostart: spec.autostart,
            pid: o.pid,
            qemu_status: o.qemu_status,
            vnc: o.vnc,
            uptime_seconds: o.pid.and_then(uptime_seconds),
            last_log: if o.state == RunState::Crashed {
                last_log(&self.paths(&spec.name), 5)
            } else {
                vec![]
            },
        }
    }

    /// The state of one VM.
    pub async fn status(&self, name: &str) -> Result<VmStatus, EngineError> {
        let spec = self.get_spec(name)?;
        let o = observe(&spec, &self.paths(&spec.name)).await;
        Ok(self.status_from(&spec, o))
    }

    /// The state of every VM, by name. VMs without a live QEMU are observed from their files
    /// right here (or remembered, see `watch_idle_vms`); running ones are asked for their
    /// status concurrently.
    pub async fn list(&self) -> Result<Vec<VmStatus>, EngineError> {
        let records = self.reg().list_shared()?;
        let mut observed: Vec<Option<Observed>> = Vec::with_capacity(records.len());
        let mut live = tokio::task::JoinSet::new();
        {
            let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_mut().is_some_and(|w| !w.catch_up()) {
                *guard = None;
            }
            let mut idle = guard.as_mut();
            for (i, r) in records.iter().enumerate() {
                let name = r.spec.name.as_str();
                if let Some(state) = idle.as_ref().and_then(|w| w.get(name)) {
                    observed.push(Some(Observed::idle(state)));
                    continue;
                }
                let paths = self.paths(&r.spec.name);
                let watched = idle.as_mut().is_some_and(|w| w.watch(name, &paths));
                match observe_files(&r.spec, &paths) {
                    Ok(o) => {
                        if let Some(w) = idle.as_mut().filter(|_| watched) {
                            w.remember(name, o.state);
                        }
                        observed.push(Some(o));
                    }
                    Err(pid) => {
                        observed.push(None);
                        live.spawn(async move { (i, observe_live(pid, &paths).await) });
                    }
                }
            }
        }
        while let Some(res) = live.join_next().await {
            if let Ok((i, o)) = res {
                observed[i] = Some(o);
            }
        }
        Ok(records
            .iter()
            .zip(observed)
            .map(|(r, o)| self.status_from(&r.spec, o.unwrap_or(Observed::idle(RunState::Stopped))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid above the kernel's largest pid_max: never a live process.
    const DEAD_PID: u32 = 4_194_305;

    fn spec(name: &str, dir: &std::path::Path) -> String {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, "not really a kernel").unwrap();
        format!("name = \"{name}\"\n[boot]\nkernel = \"{}\"\n", kernel.display())
    }

    async fn state_of(e: &Engine, name: &str) -> (RunState, Option<u32>) {
        let list = e.list().await.unwrap();
        let st = list.iter().find(|s| s.name == name).unwrap();
        (st.state, st.pid)
    }

    /// Every way the files decide a VM's state, observed through `list` with and without
    /// the idle watch of `corral serve`: both must see each change at once.
    async fn list_follows_the_files(watch: bool) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::HostConfig::parse(&format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n",
            dir.path().display()
        ))
        .unwrap();
        let e = Engine::open(cfg).unwrap();
        if watch {
            e.watch_idle_vms();
            assert!(e.idle.lock().unwrap().is_some(), "inotify is available here");
        }
        let a = e.define_toml(&spec("a", dir.path()), None).unwrap();
        e.define_toml(&spec("b", dir.path()), None).unwrap();
        let p = e.paths(&a.name);
        assert_eq!(state_of(&e, "a").await, (RunState::Stopped, None));
        assert_eq!(state_of(&e, "a").await, (RunState::Stopped, None), "asked twice");

        // A saved state, put in place as `save` does (written aside, then renamed).
        std::fs::create_dir_all(&p.data).unwrap();
        std::fs::write(p.saved_meta(), "{}").unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Stopped, "state.json alone");
        std::fs::write(p.data.join("state.sav.tmp"), "x").unwrap();
        std::fs::rename(p.data.join("state.sav.tmp"), p.saved_state()).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Saved);
        assert_eq!(state_of(&e, "b").await.0, RunState::Stopped, "b is not touched");
        std::fs::remove_file(p.saved_state()).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Stopped);

        // A pidfile in a run dir made after the first look; its process is gone: crashed.
        std::fs::create_dir_all(&p.run).unwrap();
        std::fs::write(p.pidfile(), format!("{DEAD_PID}\n")).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Crashed);
        std::fs::remove_file(p.pidfile()).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Stopped);

        // A live process carrying the VM's UUID (a stand-in for its QEMU, without a monitor).
        let uuid = uuid_of(&e.get_spec("a").unwrap());
        // `sleep` itself, named by the UUID (argv[0]): no shell in between that could exec
        // or exit on its own.
        let mut child = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::arg0(&mut child, &uuid);
        let mut child = child.arg("30").stdin(std::process::Stdio::null()).spawn().unwrap();
        std::fs::write(p.pidfile(), format!("{}\n", child.id())).unwrap();
        // `spawn` can return before the child has exec'd (its /proc cmdline is then still
        // being replaced); QEMU's pidfile, too, is only written once it runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !crate::process::is_our_qemu(child.id(), &uuid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(state_of(&e, "a").await, (RunState::Running, Some(child.id())));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Crashed, "pidfile left behind");

        // The run dir removed and made again empty (as after a reboot).
        std::fs::remove_dir_all(&p.run).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Stopped);
        std::fs::create_dir_all(&p.run).unwrap();
        std::fs::write(p.pidfile(), format!("{DEAD_PID}\n")).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Crashed);
        std::fs::remove_file(p.pidfile()).unwrap();

        // The VM deleted, defined again under its name and saved: seen as the new VM.
        e.delete("a", false).await.unwrap();
        assert!(e.list().await.unwrap().iter().all(|s| s.name != "a"));
        e.define_toml(&spec("a", dir.path()), None).unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Stopped);
        std::fs::create_dir_all(&p.data).unwrap();
        std::fs::write(p.saved_meta(), "{}").unwrap();
        std::fs::write(p.saved_state(), "x").unwrap();
        assert_eq!(state_of(&e, "a").await.0, RunState::Saved);
    }

    #[tokio::test]
    async fn list_follows_the_files_when_looking_every_time() {
        list_follows_the_files(false).await;
    }

    #[tokio::test]
    async fn list_follows_the_files_when_remembering_idle_vms() {
        list_follows_the_files(true).await;
    }
}
