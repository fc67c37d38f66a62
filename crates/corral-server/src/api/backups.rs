//! Backups over the API: run (a job), list.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use corral_types::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::jobs::accepted;
use crate::auth::Caller;
use crate::error::{bad_query, optional_body, vm_name, ApiError};
use crate::AppState;

/// Options of `POST /api/v1/vms/NAME/backup`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// Read every disk in full.
    #[serde(default)]
    full: bool,
    /// System disks only (default: the VM's `[backup] skeleton`).
    #[serde(default)]
    skeleton: Option<bool>,
}

/// `POST /api/v1/vms/NAME/backup`: a backup job (`202`, see [`accepted`]).
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Operator, "a backup")?;
    let opts: BackupBody = optional_body(&body)?;
    state.engine.get(name.as_str())?;
    let (engine, vm) = (state.engine.clone(), name.to_string());
    accepted(
        &state,
        &caller,
        "backup",
        name.as_str(),
        "backup",
        async move { engine.backup_run(&vm, opts.full, opts.skeleton).await },
        |b| format!("backup {}", b.id),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupQuery {
    vm: Option<String>,
}

/// `GET /api/v1/backups?vm=`.
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    q: Result<Query<BackupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    if let Some(vm) = &q.vm {
        vm_name(vm)?;
    }
    let list: Vec<corral_engine::engine::backup::BackupSummary> = state
        .engine
        .backup_list(q.vm.as_deref())?
        .iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!(list)))
}
