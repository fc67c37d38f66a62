//! Scheduled jobs over the API (the `[[schedule]]` entries of the host config, run by the
//! daemon): list with next and last runs, add or replace, delete, run now, run history.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_types::{Role, ScheduleRun, ScheduleSpec, ScheduleStatus};
use serde::Deserialize;
use serde_json::json;

use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{bad_query, json_body, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// Every schedule: its entry, next run, last finished run, and whether it runs now.
#[utoipa::path(
    get, operation_id = "listSchedules", path = "/api/v1/schedules", tag = "schedules",
    responses(
        (status = 200, description = "The schedules (as `corral schedule list --json`)", body = Vec<ScheduleStatus>),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, _c: Caller) -> Result<Json<Vec<ScheduleStatus>>, ApiError> {
    Ok(Json(state.engine.schedules()?))
}

/// Adds the schedule `name`, or replaces it: the host config's `[[schedule]]` entry is
/// rewritten (comments and the rest of the file are kept) and the daemon follows at once.
#[utoipa::path(
    put, operation_id = "putSchedule", path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule (its `name` in the body must be the same)")),
    request_body(content = ScheduleSpec),
    responses(
        (status = 200, description = "Stored; the schedule as it now stands", body = ScheduleStatus),
        (status = 400, description = "Bad entry: calendar, selection, retention, or a name that differs", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ScheduleStatus>, ApiError> {
    vm_name(&name)?;
    caller.require(Role::Admin, "changing schedules")?;
    taking_work(&state)?;
    let spec: ScheduleSpec = json_body(&body)?;
    if spec.name != name {
        return Err(ApiError::bad_request(format!(
            "the body's name {:?} is not the {name:?} of the URL",
            spec.name
        )));
    }
    let r = state.engine.schedule_put(spec).map_err(ApiError::from);
    audited(&state, &caller, "schedule-put", &name, r)?;
    Ok(Json(one(&state, &name)?))
}

fn one(state: &AppState, name: &str) -> Result<ScheduleStatus, ApiError> {
    state
        .engine
        .schedules()?
        .into_iter()
        .find(|s| s.spec.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))
}

/// Removes the schedule's entry from the host config (its run history stays).
#[utoipa::path(
    delete, operation_id = "deleteSchedule", path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    vm_name(&name)?;
    caller.require(Role::Admin, "changing schedules")?;
    taking_work(&state)?;
    let r = state.engine.schedule_delete(&name).map_err(ApiError::from);
    audited(&state, &caller, "schedule-delete", &name, r)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the schedule now (even when disabled). Its backups show as jobs; the run itself is
/// followed at `GET /api/v1/schedules/NAME/runs`.
#[utoipa::path(
    post, operation_id = "runSchedule", path = "/api/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses(
        (status = 202, description = "Started", headers(("Location" = String, description = "Its runs"))),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "It is running", body = ErrorBody),
    )
)]
pub async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    vm_name(&name)?;
    caller.require(Role::Operator, "running a schedule")?;
    start_run(&state, &caller, &name)?;
    let location = format!("/api/v1/schedules/{name}/runs");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({"schedule": name, "started": true})),
    )
        .into_response())
}

/// Starts a run of schedule `name` for `caller` (the API's and the web page's "run now"):
/// audited, and waited for when the daemon stops, as the jobs calls start are.
pub(crate) fn start_run(state: &AppState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    taking_work(state)?;
    let r = state.engine.schedule_run_now(name).map_err(ApiError::from);
    let handle = audited(state, caller, "schedule-run", name, r)?;
    state.jobs.spawn(async move {
        let _ = handle.await;
    });
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// How many, newest first (default 20).
    #[serde(default = "twenty")]
    limit: usize,
}

fn twenty() -> usize {
    20
}

/// The schedule's runs, newest first, with each target's result.
#[utoipa::path(
    get, operation_id = "scheduleRuns", path = "/api/v1/schedules/{name}/runs", tag = "schedules",
    params(("name" = String, Path, description = "The schedule"), RunsQuery),
    responses(
        (status = 200, description = "Its runs", body = Vec<ScheduleRun>),
        (status = 400, description = "Bad name or query", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn runs(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ScheduleRun>>, ApiError> {
    vm_name(&name)?;
    let Query(q) = q.map_err(bad_query)?;
    Ok(Json(state.engine.schedule_runs(Some(&name), q.limit.min(500))?))
}
