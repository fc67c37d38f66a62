//! VMs over the API: list, show, and the lifecycle actions.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use corral_types::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{optional_body, vm_name, ApiError};
use crate::AppState;

/// `GET /api/v1/vms`: every VM's status (as `corral vm list --json`).
pub async fn list(State(state): State<AppState>, _c: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(state.engine.list().await?).unwrap_or(Value::Null),
    ))
}

/// `GET /api/v1/vms/NAME`: spec, generation and status; `ETag` is the generation.
pub async fn show(State(state): State<AppState>, _c: Caller, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    let rec = state.engine.get(name.as_str())?;
    let status = state.engine.status(name.as_str()).await?;
    let etag = format!("\"{}\"", rec.generation);
    let console = state.engine.paths(&rec.spec.name).console_log();
    let body = json!({"spec": rec.spec, "generation": rec.generation, "status": status, "console_log": console});
    Ok(([(header::ETAG, etag)], Json(body)).into_response())
}

/// Options of `POST /api/v1/vms/NAME/ACTION`; every action takes an optional JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Seconds to wait for the guest's ACPI shutdown before forcing (stop).
    #[serde(default)]
    timeout_s: Option<u64>,
    /// Skip ACPI (stop).
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/vms/NAME/{start|stop|save|pause|resume|kill}`: waits for the action and
/// answers its result with the VM's status after it.
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(
        json!({"vm": vm, "action": action, "result": value, "status": status}),
    ))
}
