//! Snapshots and clones over the API: the engine calls of `corral snapshot …` and `corral vm
//! clone`. What runs as a job in the engine (a snapshot with memory, a revert of a running
//! VM, a full clone) answers `202` with the job; the rest answers when it is done.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::engine::snapshot::SnapshotInfo;
use corral_types::{CloneReport, Role, VmName};
use serde::{Deserialize, Serialize};

use super::jobs::{accepted, Accepted};
use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{json_body, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// A snapshot name, checked as `corral snapshot` checks it (the VM name rule).
fn snap_name(snap: &str) -> Result<VmName, ApiError> {
    VmName::new(snap).map_err(|e| ApiError::bad_request(format!("bad snapshot name: {e}")))
}

/// The snapshot, or a 404 (the engine calls a missing one bad input, as the CLI reports it).
fn find(state: &AppState, vm: &str, snap: &str) -> Result<SnapshotInfo, ApiError> {
    state
        .engine
        .snapshot_list(vm)?
        .into_iter()
        .find(|s| s.name == snap)
        .ok_or_else(|| ApiError::not_found(format!("VM {vm} has no snapshot named {snap:?}")))
}

/// List a VM's snapshots, oldest first (as `corral snapshot list --json`).
#[utoipa::path(
    get, operation_id = "listSnapshots", path = "/api/v1/vms/{name}/snapshots", tag = "snapshots",
    params(("name" = String, Path, description = "The VM")),
    responses(
        (status = 200, description = "The snapshots present on every disk", body = Vec<SnapshotInfo>),
        (status = 400, description = "Bad name, or the VM cannot have snapshots", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    let name = vm_name(&name)?;
    Ok(Json(state.engine.snapshot_list(name.as_str())?))
}

/// One snapshot.
#[utoipa::path(
    get, operation_id = "showSnapshot", path = "/api/v1/vms/{name}/snapshots/{snap}", tag = "snapshots",
    params(("name" = String, Path, description = "The VM"), ("snap" = String, Path, description = "The snapshot")),
    responses(
        (status = 200, description = "The snapshot", body = SnapshotInfo),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such VM or snapshot", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    _c: Caller,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Json<SnapshotInfo>, ApiError> {
    let name = vm_name(&name)?;
    let snap = snap_name(&snap)?;
    Ok(Json(find(&state, name.as_str(), snap.as_str())?))
}

/// Options of a new snapshot (as `corral snapshot create`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    /// The snapshot's name (the VM name rule).
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// On a running VM, the disks only (default: with memory, as a job).
    #[serde(default)]
    pub no_memory: bool,
}

/// Take a snapshot. A running VM's snapshot with memory is a job (`202`); otherwise the
/// answer is the snapshot (`201`).
#[utoipa::path(
    post, operation_id = "createSnapshot", path = "/api/v1/vms/{name}/snapshots", tag = "snapshots",
    params(("name" = String, Path, description = "The VM")),
    request_body = SnapshotBody,
    responses(
        (status = 201, description = "Taken (as `corral snapshot create --json`)", body = SnapshotInfo,
            headers(("Location" = String, description = "The snapshot"))),
        (status = 202, description = "Taking it with memory: the job", body = Accepted,
            headers(("Location" = String, description = "The job"))),
        (status = 400, description = "Bad input, or a snapshot of that name exists", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM is busy or saved", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Operator, "a snapshot")?;
    let b: SnapshotBody = json_body(&body)?;
    let snap = snap_name(&b.name)?;
    state.engine.get(name.as_str())?;
    let location = format!("/api/v1/vms/{name}/snapshots/{snap}");
    let (engine, vm) = (state.engine.clone(), name.to_string());
    accepted(
        &state,
        &caller,
        name.as_str(),
        "snapshot",
        async move {
            engine
                .snapshot_create(&vm, snap.as_str(), b.description.as_deref(), b.no_memory)
                .await
        },
        |s| format!("snapshot {}", s.name),
        Some(location),
    )
    .await
}

/// Go back to a snapshot (as `corral snapshot revert`): a running VM's memory too, as a job
/// (`202`); a stopped VM's disks at once (`200`).
#[utoipa::path(
    post, operation_id = "revertSnapshot", path = "/api/v1/vms/{name}/snapshots/{snap}/revert", tag = "snapshots",
    params(("name" = String, Path, description = "The VM"), ("snap" = String, Path, description = "The snapshot")),
    responses(
        (status = 200, description = "Reverted (as `corral snapshot revert --json`)", body = SnapshotInfo),
        (status = 202, description = "Loading the snapshot into the running VM: the job", body = Accepted,
            headers(("Location" = String, description = "The job"))),
        (status = 400, description = "Bad name, or a disk-only snapshot for a running VM", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such VM or snapshot", body = ErrorBody),
        (status = 409, description = "The VM is busy or saved", body = ErrorBody),
    )
)]
pub async fn revert(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    let snap = snap_name(&snap)?;
    caller.require(Role::Operator, "reverting to a snapshot")?;
    find(&state, name.as_str(), snap.as_str())?;
    let (engine, vm) = (state.engine.clone(), name.to_string());
    accepted(
        &state,
        &caller,
        name.as_str(),
        "revert",
        async move { engine.snapshot_revert(&vm, snap.as_str()).await },
        |s| format!("back at snapshot {}", s.name),
        None,
    )
    .await
}

/// What `corral snapshot delete --json` prints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotDeleted {
    pub vm: String,
    pub deleted: String,
}

/// Delete a snapshot.
#[utoipa::path(
    delete, operation_id = "deleteSnapshot", path = "/api/v1/vms/{name}/snapshots/{snap}", tag = "snapshots",
    params(("name" = String, Path, description = "The VM"), ("snap" = String, Path, description = "The snapshot")),
    responses(
        (status = 200, description = "Deleted (as `corral snapshot delete --json`)", body = SnapshotDeleted),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such VM or snapshot", body = ErrorBody),
        (status = 409, description = "The VM is busy or saved", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Json<SnapshotDeleted>, ApiError> {
    let name = vm_name(&name)?;
    let snap = snap_name(&snap)?;
    caller.require(Role::Operator, "deleting a snapshot")?;
    taking_work(&state)?;
    let result = match find(&state, name.as_str(), snap.as_str()) {
        Ok(_) => state
            .engine
            .snapshot_delete(name.as_str(), snap.as_str())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let target = format!("{name}@{snap}");
    audited(&state, &caller, "snapshot delete", &target, result)?;
    Ok(Json(SnapshotDeleted {
        vm: name.to_string(),
        deleted: snap.to_string(),
    }))
}

/// Options of `corral vm clone`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    /// The new VM's name.
    pub name: String,
    /// An overlay on a shared read-only base (default: a full, independent copy).
    #[serde(default)]
    pub linked: bool,
    /// Clone the VM as it was at this snapshot.
    #[serde(default)]
    pub from_snapshot: Option<String>,
}

/// Clone a VM. A full copy is a job (`202`); a linked clone is made at once (`201`).
#[utoipa::path(
    post, operation_id = "cloneVm", path = "/api/v1/vms/{name}/clone", tag = "vms",
    params(("name" = String, Path, description = "The VM to clone")),
    request_body = CloneBody,
    responses(
        (status = 201, description = "The linked clone (as `corral vm clone --json`)", body = CloneReport,
            headers(("Location" = String, description = "The new VM"))),
        (status = 202, description = "The full copy's job", body = Accepted,
            headers(("Location" = String, description = "The job"))),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The new name is taken, or the source is busy or running", body = ErrorBody),
    )
)]
pub async fn clone(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    // A clone defines a VM.
    caller.require(Role::Admin, "cloning a VM")?;
    let b: CloneBody = json_body(&body)?;
    let new = vm_name(&b.name).map_err(|e| ApiError::bad_request(format!("name: {}", e.message())))?;
    let snap = b.from_snapshot.as_deref().map(snap_name).transpose()?;
    state.engine.get(name.as_str())?;
    let location = format!("/api/v1/vms/{new}");
    let target = format!("{name} → {new}");
    if b.linked {
        taking_work(&state)?;
        let r = state
            .engine
            .clone_vm(name.as_str(), new.as_str(), true, snap.as_ref().map(VmName::as_str))
            .await
            .map_err(ApiError::from);
        let report = audited(&state, &caller, "clone", &target, r)?;
        return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(report)).into_response());
    }
    let (engine, src) = (state.engine.clone(), name.to_string());
    accepted(
        &state,
        &caller,
        name.as_str(),
        "clone",
        async move {
            engine
                .clone_vm(&src, new.as_str(), false, snap.as_ref().map(VmName::as_str))
                .await
        },
        |r| format!("made full clone {}", r.name),
        Some(location),
    )
    .await
}
