//! Resource use over the API: the sampler's latest pass, and the history of a VM or of the
//! host as series for graphs (`?range=hour|day|month`). Viewers may read all of it.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_types::{HistoryRange, MetricsHistory, MetricsReport, VmName};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{bad_query, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// How long `GET /api/v1/metrics` waits for the daemon's first pass before a 503.
const FIRST_PASS_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// `hour` (the default), `day` or `month`.
    #[param(value_type = Option<HistoryRange>)]
    range: Option<String>,
}

impl RangeQuery {
    /// The range asked for; an unknown one is a 400 naming the allowed ones.
    pub(crate) fn range(&self) -> Result<HistoryRange, ApiError> {
        match &self.range {
            None => Ok(HistoryRange::default()),
            Some(r) => r
                .parse()
                .map_err(|e: corral_types::UnknownRange| ApiError::bad_request(e.to_string())),
        }
    }
}

/// Whose history to read.
pub(crate) enum Subject {
    Vm(VmName),
    Host,
}

/// A history read on a blocking thread (SQLite), ending now. A VM must exist (404).
pub(crate) async fn read_history(
    state: &AppState,
    subject: Subject,
    range: HistoryRange,
) -> Result<MetricsHistory, ApiError> {
    if let Subject::Vm(vm) = &subject {
        state.engine.get(vm.as_str())?;
    }
    let history = state
        .sampler
        .history()
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    let now = now_ms();
    tokio::task::spawn_blocking(move || match subject {
        Subject::Vm(vm) => history.vm_history(vm.as_str(), range, now),
        Subject::Host => history.host_history(range, now),
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the metrics history: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The daemon's latest sampling pass: the host and every VM, with rates (as
/// `corral metrics --json`).
#[utoipa::path(
    get, operation_id = "metrics", path = "/api/v1/metrics", tag = "metrics",
    responses(
        (status = 200, description = "The latest pass", body = MetricsReport),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "No pass has finished yet (the daemon just started)", body = ErrorBody),
    )
)]
pub async fn latest(State(state): State<AppState>, _c: Caller) -> Result<Response, ApiError> {
    let mut rx = state.sampler.subscribe();
    let report = match tokio::time::timeout(FIRST_PASS_WAIT, rx.wait_for(Option::is_some)).await {
        Ok(Ok(r)) => r.clone(),
        _ => None,
    };
    let Some(report) = report else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no sampling pass has finished yet (the daemon just started); try again in a few seconds",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return Ok(r);
    };
    Ok(Json(&*report).into_response())
}

/// A VM's resource use over the last hour, day or month, as series for graphs.
#[utoipa::path(
    get, operation_id = "vmMetrics", path = "/api/v1/vms/{name}/metrics", tag = "metrics",
    params(("name" = String, Path, description = "The VM"), RangeQuery),
    responses(
        (status = 200, description = "The VM's history", body = MetricsHistory),
        (status = 400, description = "Bad name or range", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 503, description = "The daemon keeps no history (it could not open metrics.db)", body = ErrorBody),
    )
)]
pub async fn vm_history(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MetricsHistory>, ApiError> {
    let name = vm_name(&name)?;
    let Query(q) = q.map_err(bad_query)?;
    Ok(Json(read_history(&state, Subject::Vm(name), q.range()?).await?))
}

/// The host's CPU, memory, load and file system use over the last hour, day or month.
#[utoipa::path(
    get, operation_id = "hostMetrics", path = "/api/v1/host/metrics", tag = "metrics",
    params(RangeQuery),
    responses(
        (status = 200, description = "The host's history", body = MetricsHistory),
        (status = 400, description = "Bad range", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The daemon keeps no history (it could not open metrics.db)", body = ErrorBody),
    )
)]
pub async fn host_history(
    State(state): State<AppState>,
    _c: Caller,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MetricsHistory>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    Ok(Json(read_history(&state, Subject::Host, q.range()?).await?))
}
