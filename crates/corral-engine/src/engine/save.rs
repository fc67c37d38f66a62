//! Save to disk and resume, like VirtualBox's savestate.
//!
//! `save` pauses the guest and streams its state into `state.sav` with QEMU's migration,
//! through a file descriptor handed over the monitor (`getfd` + `migrate fd:NAME`): the
//! sandbox forbids QEMU to spawn the helper an `exec:` URI would need. The file is written
//! under a temporary name, fsynced and renamed only once complete, so an interrupted save
//! never leaves a state that looks usable. The next `start` launches QEMU with
//! `-incoming defer`, hands it the file the same way, and removes the state once loaded.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use corral_qmp::Qmp;
use corral_types::{RunState, VmSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::lifecycle::StartInfo;
use super::state::{clear_runtime, observe, uuid_of};
use super::Engine;
use crate::error::EngineError;
use crate::paths::VmPaths;
use crate::process::wait_gone;

/// Stored beside `state.sav`: what is needed to bring the state back.
#[derive(Debug, Serialize, Deserialize)]
struct SavedMeta {
    /// The spec the state was saved with (the device model must match on resume).
    spec: String,
    was_running: bool,
    saved_at: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveInfo {
    pub name: String,
    pub bytes: u64,
    pub millis: u64,
}

/// Polls `query-migrate` until the migration ends; returns an error text on failure.
async fn wait_migration(qmp: &Qmp, name: &str, op: &str) -> Result<(), EngineError> {
    loop {
        let st = qmp
            .execute("query-migrate", None)
            .await
            .map_err(EngineError::qmp(name))?;
        match st.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = st
                    .get("error-desc")
                    .and_then(|e| e.as_str())
                    .unwrap_or("QEMU gave no reason");
                return Err(EngineError::op(name, op, why));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn fsync_dir(p: &std::path::Path) {
    if let Ok(d) = File::open(p) {
        let _ = d.sync_all();
    }
}

impl Engine {
    /// Suspends a running or paused VM to disk and ends its QEMU.
    pub async fn save(&self, name: &str) -> Result<SaveInfo, EngineError> {
        let spec = self.get_spec(name)?;
        let _lock = self.lock(&spec.name, "save")?;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        if !o.state.is_active() {
            return Err(EngineError::WrongState {
                name: spec.name.to_string(),
                state: o.state,
                hint: "only a running or paused VM can be saved".into(),
            });
        }
        // QEMU restores a saved state only into the devices it was saved from; after a live
        // disk or CD-ROM change the next start would build different ones.
        let changes = super::diskmgmt::layout_changes(&paths, o.pid);
        if !changes.is_empty() {
            return Err(EngineError::WrongState {
                name: spec.name.to_string(),
                state: o.state,
                hint: format!(
                    "its devices changed since it started ({}), and a saved state can only be resumed into the devices it was saved from; stop it and start it again, then save",
                    changes.join(", ")
                ),
            });
        }
        self.save_running(&spec, &paths, o.pid.unwrap_or(0), o.state == RunState::Running)
            .await
    }

    pub(crate) async fn save_running(
        &self,
        spec: &VmSpec,
        paths: &VmPaths,
        pid: u32,
        was_running: bool,
    ) -> Result<SaveInfo, EngineError> {
        let t0 = Instant::now();
        let name = spec.name.as_str();
        let qmp = self.monitor(spec, paths).await?;
        let tmp = paths.data.join("state.sav.tmp");
        let file = File::create(&tmp).map_err(EngineError::io(&tmp))?;
        let result = async {
            qmp.execute("stop", None).await.map_err(EngineError::qmp(name))?;
            // Unthrottled: the guest is paused, so the only goal is to finish quickly.
            let _ = qmp
                .execute(
                    "migrate-set-parameters",
                    Some(json!({"max-bandwidth": 0x7fff_ffff_ffff_u64})),
                )
                .await;
            qmp.execute_with_fd("getfd", Some(json!({"fdname": "corral-save"})), file.as_fd())
                .await
                .map_err(EngineError::qmp(name))?;
            qmp.execute("migrate", Some(json!({"uri": "fd:corral-save"})))
                .await
                .map_err(EngineError::qmp(name))?;
            wait_migration(&qmp, name, "save").await?;
            file.sync_all().map_err(EngineError::io(&tmp))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            let meta = SavedMeta {
                spec: spec.to_toml(),
                was_running,
                saved_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                bytes,
            };
            let meta_tmp = paths.data.join("state.json.tmp");
            std::fs::write(&meta_tmp, serde_json::to_vec_pretty(&meta).unwrap_or_default())
                .map_err(EngineError::io(&meta_tmp))?;
            File::open(&meta_tmp)
                .and_then(|f| f.sync_all())
                .map_err(EngineError::io(&meta_tmp))?;
            std::fs::rename(&meta_tmp, paths.saved_meta()).map_err(EngineError::io(paths.saved_meta()))?;
            std::fs::rename(&tmp, paths.saved_state()).map_err(EngineError::io(paths.saved_state()))?;
            fsync_dir(&paths.data);
            Ok::<u64, EngineError>(bytes)
        }
        .await;
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(paths.saved_meta());
                if was_running {
                    let _ = qmp.execute("cont", None).await;
                }
                return Err(e);
            }
        };
        let _ = qmp.execute("quit", None).await;
        drop(qmp);
        if !wait_gone(pid, &uuid_of(spec), Duration::from_secs(30)).await {
            // The state is complete and durable and the guest is paused: nothing is lost by
            // ending QEMU, and a live QEMU beside a saved state must not be resumed.
            tracing::warn!(vm = %name, "QEMU did not quit after the save; killing it");
            crate::process::send_signal(pid, nix::sys::signal::Signal::SIGKILL);
            wait_gone(pid, &uuid_of(spec), Duration::from_secs(10)).await;
        }
        clear_runtime(paths);
        Ok(SaveInfo {
            name: name.to_string(),
            bytes,
            millis: t0.elapsed().as_millis() as u64,
        })
    }

    /// Starts QEMU waiting for a migration stream and feeds it the saved state.
    pub(crate) async fn resume_saved(&self, current: &VmSpec, paths: &VmPaths) -> Result<StartInfo, EngineError> {
        let name = current.name.as_str();
        let meta_path = paths.saved_meta();
        let meta: SavedMeta = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                EngineError::op(
                    name,
                    "resume",
                    format!(
                        "{} is missing or unreadable; the saved state cannot be used",
                        meta_path.display()
                    ),
                )
            })?;
        let mut spec = VmSpec::from_toml(&meta.spec).map_err(|e| {
            EngineError::op(
                name,
                "resume",
                format!("the spec saved with the state does not parse: {e}"),
            )
        })?;
        spec.uuid = current.uuid; // must be the registry's, to recognise the process
        let t0 = Instant::now();
        let mut info = self.launch(&spec, paths, true).await?;
        let pid = info.pid;
        let result = async {
            let qmp = self.monitor(&spec, paths).await?;
            let file = File::open(paths.saved_state()).map_err(EngineError::io(paths.saved_state()))?;
            qmp.execute_with_fd("getfd", Some(json!({"fdname": "corral-restore"})), file.as_fd())
                .await
                .map_err(EngineError::qmp(name))?;
            qmp.execute("migrate-incoming", Some(json!({"uri": "fd:corral-restore"})))
                .await
                .map_err(EngineError::qmp(name))?;
            wait_migration(&qmp, name, "resume").await?;
            // The state is now in QEMU: retire it before the guest can change its disks, so
            // it can never be loaded again over newer disks.
            let _ = std::fs::remove_file(&meta_path);
            let _ = std::fs::remove_file(paths.saved_state());
            if meta.was_running {
                qmp.execute("cont", None).await.map_err(EngineError::qmp(name))?;
            }
            Ok::<(), EngineError>(())
        }
        .await;
        if let Err(e) = result {
            // Keep the state file: nothing is lost, the next start tries again.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .ok();
            wait_gone(pid, &uuid_of(&spec), Duration::from_secs(10)).await;
            clear_runtime(paths);
            return Err(e);
        }
        let _ = std::fs::remove_file(paths.saved_state());
        let _ = std::fs::remove_file(&meta_path);
        info.resumed = true;
        info.millis = t0.elapsed().as_millis() as u64;
        Ok(info)
    }
}
