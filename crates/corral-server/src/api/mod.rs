//! `/api/v1`: the versioned REST API. Bodies are JSON with the CLI's types and unknown fields
//! refused; errors are `{"error", "kind"}` with the status of [`ApiError`]. Long operations
//! answer `202 Accepted` with their job (see [`jobs::accepted`]). The OpenAPI document
//! (`openapi.rs`) is made from the handlers' annotations and served at
//! `/api/v1/openapi.json`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_engine::registry::AuditRow;
use corral_types::Role;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

mod alerts;
mod backups;
mod define;
mod events;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub mod openapi;
pub(crate) mod schedules;
pub(crate) mod session;
mod snapshots;
mod vms;

/// Every route. Fixed segments (`snapshots`, `clone`, `backup`) take precedence over
/// `{action}` in the router, so they never reach the action handler.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/login", post(session::login))
        .route("/api/v1/logout", post(session::logout))
        .route("/api/v1/whoami", get(session::whoami))
        .route("/api/v1/vms", get(vms::list).post(define::define))
        .route(
            "/api/v1/vms/{name}",
            get(vms::show).put(define::edit).delete(define::delete),
        )
        .route("/api/v1/vms/{name}/{action}", post(vms::action))
        .route("/api/v1/vms/{name}/backup", post(backups::run))
        .route("/api/v1/vms/{name}/clone", post(snapshots::clone))
        .route("/api/v1/vms/{name}/metrics", get(metrics::vm_history))
        .route(
            "/api/v1/vms/{name}/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/api/v1/vms/{name}/snapshots/{snap}",
            get(snapshots::show).delete(snapshots::delete),
        )
        .route("/api/v1/vms/{name}/snapshots/{snap}/revert", post(snapshots::revert))
        .route("/api/v1/backups", get(backups::list))
        .route("/api/v1/backups/verify", post(backups::verify))
        .route("/api/v1/backups/prune", post(backups::prune))
        .route("/api/v1/backups/{id}", get(backups::show))
        .route("/api/v1/backups/{id}/restore", post(backups::restore))
        .route("/api/v1/store/gc", post(backups::gc))
        .route("/api/v1/schedules", get(schedules::list))
        .route(
            "/api/v1/schedules/{name}",
            axum::routing::put(schedules::put).delete(schedules::delete),
        )
        .route("/api/v1/schedules/{name}/run", post(schedules::run_now))
        .route("/api/v1/schedules/{name}/runs", get(schedules::runs))
        .route("/api/v1/metrics", get(metrics::latest))
        .route("/api/v1/host/metrics", get(metrics::host_history))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::show))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/alerts", get(alerts::list))
        .fallback(|| async { ApiError::not_found("no such API path; see /api/v1/openapi.json") })
}

/// The audit log, newest first: who did what through the API, and how it ended.
#[utoipa::path(
    get, operation_id = "auditLog", path = "/api/v1/audit", tag = "session",
    responses(
        (status = 200, description = "The last 500 lines", body = Vec<AuditRow>),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
    )
)]
async fn audit_log(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AuditRow>>, ApiError> {
    caller.require(Role::Admin, "reading the audit log")?;
    Ok(Json(state.engine.audit_log(500)?))
}

/// Refuses new work once the daemon is stopping (503: try again when it is back).
pub(crate) fn taking_work(state: &AppState) -> Result<(), ApiError> {
    if state.stop.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the daemon is shutting down and takes no new work; try again once it is back",
        ));
    }
    Ok(())
}

/// Writes a mutating call to the audit log with its outcome, and passes the result on.
pub(crate) fn audited<T>(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error: {}", e.message()),
    };
    state.engine.audit(caller.who(), action, target, &outcome);
    result
}
