//! Jobs: reading them, and starting long operations in the background.

use std::future::Future;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Caller;
use crate::error::{bad_query, vm_name, ApiError, ErrorBody};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Only this VM's jobs.
    vm: Option<String>,
    /// At most this many (default 50, at most 1000).
    #[serde(default = "fifty")]
    limit: usize,
}

fn fifty() -> usize {
    50
}

/// List jobs, newest first (as `corral job list --json`).
#[utoipa::path(
    get, operation_id = "listJobs", path = "/api/v1/jobs", tag = "jobs",
    params(JobQuery),
    responses(
        (status = 200, description = "The jobs", body = Vec<corral_types::JobInfo>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<corral_types::JobInfo>>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    if let Some(vm) = &q.vm {
        vm_name(vm)?;
    }
    Ok(Json(state.engine.jobs(q.vm.as_deref(), q.limit.min(1000))?))
}

/// A job's state and progress.
#[utoipa::path(
    get, operation_id = "showJob", path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = corral_types::JobInfo),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> Result<Json<corral_types::JobInfo>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("job id {id:?} is not a number")))?;
    Ok(Json(state.engine.job(id)?))
}

/// The answer of a long operation: its job (`GET /api/v1/jobs/ID` follows it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub job: corral_types::JobInfo,
}

/// Runs `work` (a long engine operation on `vm` that records a job of `kind`, which is also
/// its action in the audit log) in the
/// background and answers `202 Accepted` with that job (and `Location:` its URL) as soon as
/// the engine has begun it. When the work ends before a job appears — refused at once (no
/// such VM, busy lock) or simply quick, like a snapshot of a stopped VM — its result is the
/// answer: `201 Created` with `Location: created` when given, else `200`; or the error.
///
/// The work is written to the audit log when it ends (`ok: ` and its `summary`), is waited for when the daemon stops,
/// and is dropped (its job recorded as failed, as after a crash) on a second SIGTERM.
pub(crate) async fn accepted<T, F, S>(
    state: &AppState,
    caller: &Caller,
    vm: &str,
    kind: &'static str,
    work: F,
    summary: S,
    created: Option<String>,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: Future<Output = Result<T, EngineError>> + Send + 'static,
    S: FnOnce(&T) -> String + Send + 'static,
{
    super::taking_work(state)?;
    let mut events = state.engine.job_events();
    let (engine, who, target, cancel) = (
        state.engine.clone(),
        caller.who().to_string(),
        vm.to_string(),
        state.cancel.clone(),
    );
    let mut task = state.jobs.spawn(async move {
        let r = tokio::select! {
            r = work => r.map_err(ApiError::from),
            _ = cancel.cancelled() => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", "cancelled: the daemon was stopped")),
        };
        let outcome = match &r {
            Ok(v) => format!("ok: {}", summary(v)),
            Err(e) => format!("error: {}", e.message()),
        };
        engine.audit(&who, kind, &target, &outcome);
        r
    });
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(j) if j.vm == vm && j.kind == kind => {
                    let location = format!("/api/v1/jobs/{}", j.id);
                    return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Accepted { job: j })).into_response());
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Err(ApiError::internal("the job stream closed")),
            },
            done = &mut task => {
                return match done {
                    Ok(Ok(result)) => Ok(match created {
                        Some(location) => (StatusCode::CREATED, [(header::LOCATION, location)], Json(result)).into_response(),
                        None => (StatusCode::OK, Json(result)).into_response(),
                    }),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(ApiError::internal(format!("the {kind} task failed: {e}"))),
                };
            }
        }
    }
}
