//! VMs over the API: list, show, and the lifecycle actions.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use corral_types::{Role, VmSpec, VmStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{etag, optional_body, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// List every VM with its state (as `corral vm list --json`).
#[utoipa::path(
    get, operation_id = "listVms", path = "/api/v1/vms", tag = "vms",
    responses(
        (status = 200, description = "Every VM", body = Vec<VmStatus>),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, _c: Caller) -> Result<Response, ApiError> {
    let list: Vec<VmStatus> = state.engine.list().await?;
    // Serialised into one buffer of about the right size: growing axum's small default
    // buffer was a large share of the call with 200 VMs (docs/benchmarks.md).
    let mut body = Vec::with_capacity(192 * list.len() + 2);
    serde_json::to_writer(&mut body, &list).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A VM: its spec, the spec's generation (also the `ETag`) and its status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VmDetail {
    pub spec: VmSpec,
    /// Goes up by one with every edit; `PUT` needs it back in `If-Match`.
    pub generation: i64,
    pub status: VmStatus,
    /// The serial console's log file on the server.
    #[schema(value_type = String)]
    pub console_log: std::path::PathBuf,
}

/// Show a VM. The `ETag` is the spec's generation, for `If-Match` on `PUT` and `DELETE`.
#[utoipa::path(
    get, operation_id = "showVm", path = "/api/v1/vms/{name}", tag = "vms",
    params(("name" = String, Path, description = "The VM")),
    responses(
        (status = 200, description = "The VM", body = VmDetail, headers(("ETag" = String, description = "The spec's generation"))),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, _c: Caller, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    let rec = state.engine.get(name.as_str())?;
    let status = state.engine.status(name.as_str()).await?;
    let console_log = state.engine.paths(&rec.spec.name).console_log();
    let body = VmDetail {
        spec: rec.spec,
        generation: rec.generation,
        status,
        console_log,
    };
    Ok(([(header::ETAG, etag(rec.generation))], Json(body)).into_response())
}

/// Options of `POST /api/v1/vms/NAME/ACTION`; every action takes an optional JSON body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Seconds to wait for the guest's ACPI shutdown before forcing (stop).
    #[serde(default)]
    timeout_s: Option<u64>,
    /// Skip ACPI (stop).
    #[serde(default)]
    force: bool,
}

/// The lifecycle actions.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // the document's list; the handler matches the path segment itself
pub enum Action {
    Start,
    Stop,
    Save,
    Pause,
    Resume,
    Kill,
}

/// What an action answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionResult {
    pub vm: String,
    pub action: String,
    /// What the CLI's `--json` prints for the action (start: the pid and timing; stop: how
    /// it ended; save: the state's size; the others `{}`).
    pub result: Value,
    /// The VM's status after it.
    pub status: VmStatus,
}

/// Start, stop, save, pause, resume or kill a VM; answers when done.
#[utoipa::path(
    post, operation_id = "vmAction", path = "/api/v1/vms/{name}/{action}", tag = "vms",
    params(("name" = String, Path, description = "The VM"), ("action" = Action, Path, description = "What to do")),
    request_body(content = Option<ActionBody>, description = "Optional; only stop takes options"),
    responses(
        (status = 200, description = "Done", body = ActionResult),
        (status = 400, description = "Bad name or body", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such VM or action", body = ErrorBody),
        (status = 409, description = "Wrong state (e.g. starting a running VM) or busy", body = ErrorBody),
        (status = 503, description = "The daemon is shutting down", body = ErrorBody),
    )
)]
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<ActionResult>, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Operator, &format!("{action} of a VM"))?;
    taking_work(&state)?;
    let opts: ActionBody = optional_body(&body)?;
    let (engine, vm) = (&state.engine, name.as_str());
    let result: Result<Value, EngineError> = match action.as_str() {
        "start" => engine.start(vm).await.map(|i| json!(i)),
        "stop" => engine
            .stop(vm, opts.timeout_s.map(Duration::from_secs), opts.force)
            .await
            .map(|o| json!(o)),
        "save" => engine.save(vm).await.map(|i| json!(i)),
        "pause" => engine.pause(vm).await.map(|_| json!({})),
        "resume" => engine.resume(vm).await.map(|i| json!(i)),
        "kill" => engine.kill(vm).await.map(|_| json!({})),
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?}: use start, stop, save, pause, resume or kill"
            )))
        }
    };
    let value = audited(&state, &caller, &action, vm, result.map_err(ApiError::from))?;
    let status = engine.status(vm).await?;
    Ok(Json(ActionResult {
        vm: vm.to_string(),
        action,
        result: value,
        status,
    }))
}
