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

pub(crate) async fn observe(spec: &VmSpec, paths: &VmPaths) -> Observed {
    let pidfile = paths.pidfile();
    if let Some(pid) = read_pidfile(&pidfile) {
        if is_our_qemu(pid, &uuid_of(spec)) {
            let q = query(paths).await;
            let (qemu_status, vnc) = match q {
                Some((s, v)) => (Some(s), v),
                None => (None, None),
            };
            let state = match qemu_status.as_deref() {
                Some("running") | None => RunState::Running,
                Some("inmigrate") | Some("prelaunch") if has_saved_state(paths) => RunState::Saved,
                Some(_) => RunState::Paused,
            };
            return Observed {
                state,
                pid: Some(pid),
                qemu_status,
                vnc,
            };
        }
        return Observed {
            state: RunState::Crashed,
            pid: None,
            qemu_status: None,
            vnc: None,
        };
    }
    let state = if has_saved_state(paths) {
        RunState::Saved
    } else {
        RunState::Stopped
    };
    Observed {
        state,
        pid: None,
        qemu_status: None,
        vnc: None,
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
        let paths = self.paths(&spec.name);
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
                last_log(&paths, 5)
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

    /// The state of every VM, by name. Running VMs are queried concurrently.
    pub async fn list(&self) -> Result<Vec<VmStatus>, EngineError> {
        let records = self.records()?;
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in records.iter().enumerate() {
            let spec = r.spec.clone();
            let paths = self.paths(&spec.name);
            set.spawn(async move { (i, observe(&spec, &paths).await) });
        }
        let mut observed: Vec<Option<Observed>> = vec![None; records.len()];
        while let Some(res) = set.join_next().await {
            if let Ok((i, o)) = res {
                observed[i] = Some(o);
            }
        }
        Ok(records
            .iter()
            .zip(observed)
            .map(|(r, o)| {
                let o = o.unwrap_or(Observed {
                    state: RunState::Stopped,
                    pid: None,
                    qemu_status: None,
                    vnc: None,
                });
                self.status_from(&r.spec, o)
            })
            .collect())
    }
}
