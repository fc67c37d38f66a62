//! Backups over the API: the engine calls of `corral backup …` and `corral store gc`. Runs
//! and restores are jobs (`202`); the rest answers when done.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use corral_engine::engine::backup::{BackupReport, BackupSummary};
use corral_engine::engine::restore::{RestoreReport, RestoreRequest};
use corral_store::{GcReport, Manifest, PruneDecision, VerifyReport};
use corral_types::Role;
use serde::{Deserialize, Serialize};

use super::jobs::{accepted, Accepted};
use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{bad_query, json_body, optional_body, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// Options of `POST /api/v1/vms/NAME/backup`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// Read every disk in full.
    #[serde(default)]
    full: bool,
    /// System disks only (default: the VM's `[backup] skeleton`).
    #[serde(default)]
    skeleton: Option<bool>,
}

/// Back up a VM (as `corral backup run NAME`): a job (`202`).
#[utoipa::path(
    post, operation_id = "runBackup", path = "/api/v1/vms/{name}/backup", tag = "backups",
    params(("name" = String, Path, description = "The VM")),
    request_body(content = Option<BackupBody>, description = "Optional"),
    responses(
        (status = 202, description = "The backup's job", body = Accepted, headers(("Location" = String, description = "The job"))),
        (status = 200, description = "Done before its job was seen (as `corral backup run --json` per VM)", body = BackupReport),
        (status = 400, description = "Bad name or body", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM is busy", body = ErrorBody),
    )
)]
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
        name.as_str(),
        "backup",
        async move { engine.backup_run(&vm, opts.full, opts.skeleton).await },
        |b| format!("backup {}", b.id),
        None,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Only this VM's backups.
    vm: Option<String>,
}

/// List backups, oldest first (as `corral backup list --json`).
#[utoipa::path(
    get, operation_id = "listBackups", path = "/api/v1/backups", tag = "backups",
    params(BackupQuery),
    responses(
        (status = 200, description = "The backups", body = Vec<BackupSummary>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    q: Result<Query<BackupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<BackupSummary>>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    if let Some(vm) = &q.vm {
        vm_name(vm)?;
    }
    let list: Vec<BackupSummary> = state
        .engine
        .backup_list(q.vm.as_deref())?
        .iter()
        .map(Into::into)
        .collect();
    Ok(Json(list))
}

/// A backup id from a URL or body, checked with the store's rule.
fn backup_id(id: &str) -> Result<&str, ApiError> {
    if corral_store::is_backup_id(id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!(
            "{id:?} is not a backup id (such as 20250301T120501.123Z-9f3a0c21); GET /api/v1/backups lists them"
        )))
    }
}

/// One backup's manifest (as `corral backup show --json`).
#[utoipa::path(
    get, operation_id = "showBackup", path = "/api/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "The backup's id")),
    responses(
        (status = 200, description = "Its manifest: kind, parent, disks, statistics, the VM spec it was taken with", body = Manifest),
        (status = 400, description = "Not a backup id", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    Ok(Json(state.engine.backup_manifest(backup_id(&id)?)?))
}

/// Options of a restore (as `corral backup restore`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// Restore as a new VM of this name (default: the backup's own VM name, which must then
    /// be free).
    #[serde(default, rename = "as")]
    pub as_name: Option<String>,
    /// Only these disks (default: every disk the backup stored).
    #[serde(default)]
    pub disks: Vec<String>,
    /// Write over the disks of the backup's own VM, which must be stopped.
    #[serde(default)]
    pub in_place: bool,
}

/// Restore a backup: as a new VM, or over its stopped VM's disks. A job (`202`).
#[utoipa::path(
    post, operation_id = "restoreBackup", path = "/api/v1/backups/{id}/restore", tag = "backups",
    params(("id" = String, Path, description = "The backup's id")),
    request_body(content = Option<RestoreBody>, description = "Optional; empty restores as the backup's own VM name"),
    responses(
        (status = 202, description = "The restore's job", body = Accepted, headers(("Location" = String, description = "The job"))),
        (status = 201, description = "Restored before its job was seen (as `corral backup restore --json`)", body = RestoreReport),
        (status = 400, description = "Bad input (id, name, disk)", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role (in place) or admin (a new VM)", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 409, description = "The target VM exists, runs or is busy", body = ErrorBody),
    )
)]
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = backup_id(&id)?.to_string();
    let b: RestoreBody = optional_body(&body)?;
    if b.in_place {
        caller.require(Role::Operator, "restoring a backup in place")?;
    } else {
        // A restore as a new VM defines one.
        caller.require(Role::Admin, "restoring a backup as a new VM")?;
    }
    if let Some(n) = &b.as_name {
        vm_name(n).map_err(|e| ApiError::bad_request(format!("as: {}", e.message())))?;
    }
    let m = state.engine.backup_manifest(&id)?;
    let target = b.as_name.clone().unwrap_or_else(|| m.vm.clone());
    let req = RestoreRequest {
        id,
        as_name: b.as_name,
        disks: b.disks,
        in_place: b.in_place,
    };
    let engine = state.engine.clone();
    accepted(
        &state,
        &caller,
        &target,
        "restore",
        async move { engine.backup_restore(&req).await },
        |r| format!("restored {} as {}", r.backup, r.vm),
        Some(format!("/api/v1/vms/{target}")),
    )
    .await
}

/// What to verify: backup ids, every backup of some VMs, or the whole store.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub vms: Vec<String>,
    /// Every backup in the store (instead of `ids`/`vms`).
    #[serde(default)]
    pub all: bool,
}

/// Re-read and hash-check every chunk the chosen backups use (as `corral backup verify`).
///
/// The answer is the report; problems found are in it (`problems`, `broken`), not an error.
#[utoipa::path(
    post, operation_id = "verifyBackups", path = "/api/v1/backups/verify", tag = "backups",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The report (as `corral backup verify --json`)", body = VerifyReport),
        (status = 400, description = "Bad input: nothing chosen, or a bad id or name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<VerifyReport>, ApiError> {
    caller.require(Role::Operator, "verifying backups")?;
    taking_work(&state)?;
    let b: VerifyBody = json_body(&body)?;
    let chosen = !b.ids.is_empty() || !b.vms.is_empty();
    if chosen == b.all {
        return Err(ApiError::bad_request(
            "name what to verify: `ids` (backup ids) and/or `vms` (VM names), or `all`: true",
        ));
    }
    for id in &b.ids {
        backup_id(id).map_err(|e| ApiError::bad_request(format!("ids: {}", e.message())))?;
    }
    for vm in &b.vms {
        vm_name(vm).map_err(|e| ApiError::bad_request(format!("vms: {}", e.message())))?;
    }
    let targets: Vec<String> = b.ids.into_iter().chain(b.vms).collect();
    let engine = state.engine.clone();
    // Reads the whole chosen store content: off the async workers.
    let r = tokio::task::spawn_blocking(move || engine.backup_verify(&targets))
        .await
        .map_err(|e| ApiError::internal(format!("the verify task failed: {e}")))?
        .map_err(ApiError::from);
    let what = if b.all { "all".to_string() } else { "chosen".to_string() };
    Ok(Json(audited(&state, &caller, "verify", &what, r)?))
}

/// Which backups to keep (as `corral backup prune`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Prune these VMs' backups…
    #[serde(default)]
    pub vms: Vec<String>,
    /// …or every VM's that has backups.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    /// Only say what would go.
    #[serde(default)]
    pub dry_run: bool,
}

/// One decision of a prune (as `corral backup prune --json` prints each).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PruneItem {
    pub vm: String,
    pub decision: PruneDecision,
}

/// Apply a keep-* policy to backups; the others are deleted (their chunks go at the next
/// `POST /api/v1/store/gc`).
#[utoipa::path(
    post, operation_id = "pruneBackups", path = "/api/v1/backups/prune", tag = "backups",
    request_body = PruneBody,
    responses(
        (status = 200, description = "Every backup considered, kept or removed (would be, with dry_run)", body = Vec<PruneItem>),
        (status = 400, description = "Bad input: no VMs or all, a policy that keeps nothing", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
    )
)]
pub async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<Vec<PruneItem>>, ApiError> {
    caller.require(Role::Operator, "pruning backups")?;
    taking_work(&state)?;
    let b: PruneBody = json_body(&body)?;
    if b.vms.is_empty() != b.all {
        return Err(ApiError::bad_request(
            "name the VMs whose backups to prune (`vms`), or `all`: true",
        ));
    }
    for vm in &b.vms {
        vm_name(vm).map_err(|e| ApiError::bad_request(format!("vms: {}", e.message())))?;
    }
    let policy = corral_engine::engine::backup::PrunePolicy {
        keep_last: b.keep_last,
        keep_daily: b.keep_daily,
        keep_weekly: b.keep_weekly,
        keep_monthly: b.keep_monthly,
    };
    if policy.is_empty() {
        return Err(ApiError::bad_request(
            "the policy keeps nothing: give at least one of keep_last, keep_daily, keep_weekly, keep_monthly",
        ));
    }
    let vms: Vec<String> = if b.all {
        let mut v: Vec<String> = state.engine.backup_list(None)?.into_iter().map(|m| m.vm).collect();
        v.sort();
        v.dedup();
        v
    } else {
        b.vms
    };
    let result = (|| {
        let mut out = vec![];
        for vm in &vms {
            for d in state.engine.backup_prune(vm, &policy, b.dry_run)? {
                out.push(PruneItem {
                    vm: vm.clone(),
                    decision: d,
                });
            }
        }
        Ok::<_, ApiError>(out)
    })();
    let action = if b.dry_run { "prune (dry run)" } else { "prune" };
    Ok(Json(audited(&state, &caller, action, &vms.join(","), result)?))
}

/// Free the chunks no backup uses any more, and what killed backups left (as `corral store gc`).
#[utoipa::path(
    post, operation_id = "storeGc", path = "/api/v1/store/gc", tag = "backups",
    responses(
        (status = 200, description = "What was freed", body = GcReport),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
    )
)]
pub async fn gc(State(state): State<AppState>, caller: Caller) -> Result<Json<GcReport>, ApiError> {
    caller.require(Role::Operator, "collecting the store's garbage")?;
    taking_work(&state)?;
    let engine = state.engine.clone();
    let r = tokio::task::spawn_blocking(move || engine.store_gc())
        .await
        .map_err(|e| ApiError::internal(format!("the gc task failed: {e}")))?
        .map_err(ApiError::from);
    Ok(Json(audited(&state, &caller, "gc", "store", r)?))
}
