//! Jobs: reading them, and starting long operations in the background.

use std::future::Future;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
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
pub async fn show(State(state): State<AppState>, _c: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("job id {id:?} is not a number")))?;
    let mut v = json!(state.engine.job(id)?);
    if let Some(r) = state.result_of(id) {
        v["result"] = r;
    }
    Ok(Json(v))
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
    let (st, who, target) = (state.clone(), caller.who().to_string(), vm.to_string());
    // The task's own view of the job stream: its job's events (the last one is its end) name
    // the id its result is kept under, for `GET /api/v1/jobs/ID`.
    let mut own = state.engine.job_events();
    let mut task = state.jobs.spawn(async move {
        let r = tokio::select! {
            r = work => r.map_err(ApiError::from),
            _ = st.cancel.cancelled() => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", "cancelled: the daemon was stopped")),
        };
        let outcome = match &r {
            Ok(v) => format!("ok: {}", summary(v)),
            Err(e) => format!("error: {}", e.message()),
        };
        st.engine.audit(&who, kind, &target, &outcome);
        let mut id = None;
        loop {
            match own.try_recv() {
                Ok(j) if j.vm == target && j.kind == kind => id = Some(j.id),
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        if let Some(id) = id {
            st.keep_result(id, r.as_ref().map(|v| json!(v)).map_err(Clone::clone));
        }
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

#[cfg(test)]
mod tests {
    //! The shutdown rules of jobs started by calls. The work here is a fake — a future gated
    //! by a channel — because what is tested is the daemon's waiting and cancelling, which no
    //! real engine operation lets a test hold open at will; the engine and its audit log are
    //! real. (`crates/corral/tests/api.rs` stops a real `corral serve` during a real backup.)
    use std::sync::Arc;
    use std::time::Duration;

    use corral_engine::engine::auth::Principal;
    use corral_engine::{Engine, HostConfig};
    use corral_types::Role;

    use super::*;
    use crate::auth::Credential;

    fn state(dir: &std::path::Path) -> AppState {
        let cfg = HostConfig::parse(&format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n",
            dir.display()
        ))
        .unwrap();
        AppState::new(Arc::new(Engine::open(cfg).unwrap()), false)
    }

    fn caller() -> Caller {
        Caller {
            principal: Principal {
                who: "user test".into(),
                role: Role::Admin,
            },
            credential: Credential::Token,
        }
    }

    /// Starts gated work; returns the gate's sender.
    async fn start(state: &AppState) -> tokio::sync::oneshot::Sender<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let work = async move {
            let _ = rx.await;
            Ok::<_, EngineError>(7)
        };
        // No engine job appears for this work, so the call answers when the work ends: run
        // it as its own task and wait until the daemon tracks it.
        let (s, c) = (state.clone(), caller());
        tokio::spawn(async move { accepted(&s, &c, "vm", "test", work, |n| format!("{n}"), None).await });
        tokio::time::timeout(Duration::from_secs(5), async {
            while state.jobs.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the work is tracked");
        tx
    }

    #[tokio::test]
    async fn stopping_waits_for_running_work_and_takes_no_new() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let gate = start(&st).await;
        assert_eq!(st.jobs.len(), 1);
        st.stop.cancel();
        let refused = accepted(
            &st,
            &caller(),
            "vm",
            "test",
            async { Ok::<_, EngineError>(1) },
            |_| String::new(),
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let st2 = st.clone();
        let finished = tokio::spawn(async move { st2.finish_jobs().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!finished.is_finished(), "shutdown must wait for the running work");
        gate.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .unwrap()
            .unwrap();
        let log = st.engine.audit_log(10).unwrap();
        assert!(log.iter().any(|l| l.action == "test" && l.result == "ok: 7"), "{log:?}");
    }

    #[tokio::test]
    async fn cancelling_drops_running_work_and_audits_it() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let _gate = start(&st).await;
        st.stop.cancel();
        let st2 = st.clone();
        let finished = tokio::spawn(async move { st2.finish_jobs().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!finished.is_finished());
        st.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .unwrap()
            .unwrap();
        let log = st.engine.audit_log(10).unwrap();
        assert!(
            log.iter().any(|l| l.action == "test" && l.result.contains("cancelled")),
            "{log:?}"
        );
    }
}
