//! Alerts over the API: the firing ones, or the history (`corral alerts [--all] --json`).

use axum::extract::{Query, State};
use axum::Json;
use corral_types::AlertInfo;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{bad_query, ApiError, ErrorBody};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Also the resolved ones: the history, newest first.
    #[serde(default)]
    all: bool,
    /// At most this many (default 100, at most 1000).
    #[serde(default = "hundred")]
    limit: usize,
}

fn hundred() -> usize {
    100
}

/// The firing alerts, newest first (`?all=true`: every alert in the history), each with the
/// outcome of its notifications.
#[utoipa::path(
    get, operation_id = "listAlerts", path = "/api/v1/alerts", tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, description = "The alerts (as `corral alerts --json`)", body = Vec<AlertInfo>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    q: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AlertInfo>>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    Ok(Json(state.engine.alerts(q.all, q.limit.min(1000))?))
}
