//! `corral serve`: a versioned REST API (`/api/v1`) over the same engine the CLI uses, so
//! both take the same per-VM locks and cannot race.
//!
//! Every call needs a bearer token (`corral token create --role R`); a viewer reads, an
//! operator also acts on VMs, an admin also reads the audit log. Every mutating call is
//! written to the audit log with its outcome. VM names from URLs go through the same
//! validation as on the command line, so `../x` is a 400, never a path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_engine::engine::auth::Principal;
use corral_engine::{Engine, EngineError};
use corral_types::{Role, VmName};
use serde::Deserialize;
use serde_json::{json, Value};

mod tls;
pub use tls::{ensure_self_signed, TlsSource};

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Plain HTTP on a non-loopback address (otherwise TLS is required there).
    pub insecure_http: bool,
    /// TLS: given files, or a self-signed certificate kept in a directory. Without it,
    /// plain HTTP (loopback, or with `insecure_http`).
    pub tls: Option<TlsSource>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address: serving the API there in plain HTTP would send passwords and tokens in \
         clear. Use TLS (--tls-cert/--tls-key, or nothing and a self-signed certificate is made), or pass \
         --insecure-http knowingly"
    )]
    NeedsTls(SocketAddr),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// Refuses plain HTTP beyond loopback unless asked for by name.
pub fn check_listen(opts: &ServeOptions) -> Result<(), ServeError> {
    if opts.tls.is_none() && !opts.listen.ip().is_loopback() && !opts.insecure_http {
        return Err(ServeError::NeedsTls(opts.listen));
    }
    Ok(())
}

/// Binds the listener (port 0 picks a free one; the address is in the result).
pub async fn bind(opts: &ServeOptions) -> Result<tokio::net::TcpListener, ServeError> {
    check_listen(opts)?;
    tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })
}

/// Serves plain HTTP until `shutdown` completes; calls in flight are let finish.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Serves HTTPS with the certificate of `source` until `shutdown` (a certificate that does
/// not load is the error, before anything is served).
pub async fn serve_tls(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    source: &TlsSource,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (config, _) = tls::server_config(source)?;
    tls::serve_tls(listener, router(engine), config, shutdown).await
}

/// The certificate file a TLS server presents (made now if it is to be self-signed).
pub fn tls_certificate(source: &TlsSource) -> Result<std::path::PathBuf, ServeError> {
    tls::server_config(source).map(|(_, cert)| cert)
}

/// The whole API.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/v1/vms", get(vm_list))
        .route("/api/v1/vms/{name}", get(vm_show))
        .route("/api/v1/vms/{name}/{action}", post(vm_action))
        .route("/api/v1/vms/{name}/backup", post(vm_backup))
        .route("/api/v1/backups", get(backup_list))
        .route("/api/v1/events", get(events))
        .route("/api/v1/jobs", get(job_list))
        .route("/api/v1/jobs/{id}", get(job_show))
        .route("/api/v1/audit", get(audit_log))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such API path; see /api/v1") })
        .with_state(engine)
}

/// An error as the API answers it: a status and `{"error": …, "kind": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let kind = e.kind();
        let status = match kind {
            "invalid" | "config" | "missing-file" => StatusCode::BAD_REQUEST,
            "not-found" => StatusCode::NOT_FOUND,
            "exists" | "busy" | "wrong-state" | "in-use" | "port-in-use" => StatusCode::CONFLICT,
            "timeout" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.message, "kind": self.kind}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The authenticated caller (a bearer token).
pub struct Caller(pub Principal);

impl Caller {
    fn require(&self, role: Role, what: &str) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{what} needs the {role} role; {} is a {}", self.0.who, self.0.role),
            ))
        }
    }
}

impl FromRequestParts<Arc<Engine>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &Arc<Engine>) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthorized("no credentials: send `Authorization: Bearer TOKEN` (`corral token create`)")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        match engine.token_check(token.trim())? {
            Some(p) => Ok(Caller(p)),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }
}

/// A request body that may be empty (then `T::default()`); when present it must be exactly
/// a `T` (unknown fields are refused), else a 400 naming the problem.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the request body: {e}")))
}

/// A query string that does not parse (or has unknown parameters) is a 400.
fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())
}

fn vm_name(name: &str) -> Result<VmName, ApiError> {
    VmName::new(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))
}

async fn vm_list(State(engine): State<Arc<Engine>>, _c: Caller) -> Result<Response, ApiError> {
    let list = engine.list().await?;
    // Serialised straight from the statuses into one buffer of about the right size: going
    // through a `Value`, and growing a small buffer, were half of the call with 200 VMs.
    let mut body = Vec::with_capacity(192 * list.len() + 2);
    serde_json::to_writer(&mut body, &list)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn vm_show(
    State(engine): State<Arc<Engine>>,
    _c: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    let rec = engine.get(name.as_str())?;
    let status = engine.status(name.as_str()).await?;
    let etag = format!("\"{}\"", rec.generation);
    let body = json!({"spec": rec.spec, "generation": rec.generation, "status": status});
    Ok(([(header::ETAG, etag)], Json(body)).into_response())
}

/// Options of `POST /api/v1/vms/NAME/stop`; every action takes an optional JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// Seconds to wait for the guest's ACPI shutdown before forcing (stop).
    #[serde(default)]
    timeout_s: Option<u64>,
    /// Skip ACPI (stop).
    #[serde(default)]
    force: bool,
}

async fn vm_action(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Operator, &format!("{action} of a VM"))?;
    let opts: ActionBody = optional_body(&body)?;
    let vm = name.as_str();
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
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no action {other:?}: use start, stop, save, pause, resume or kill"),
            ))
        }
    };
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    engine.audit(&caller.0.who, &action, vm, &outcome);
    let value = result?;
    let status = engine.status(vm).await?;
    Ok(Json(
        json!({"vm": vm, "action": action, "result": value, "status": status}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    vm: Option<String>,
    #[serde(default = "fifty")]
    limit: usize,
}

fn fifty() -> usize {
    50
}

async fn job_list(
    State(engine): State<Arc<Engine>>,
    _c: Caller,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    if let Some(vm) = &q.vm {
        vm_name(vm)?;
    }
    let jobs = engine.jobs(q.vm.as_deref(), q.limit.min(1000))?;
    Ok(Json(json!(jobs)))
}

async fn job_show(
    State(engine): State<Arc<Engine>>,
    _c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("job id {id:?} is not a number"),
        )
    })?;
    Ok(Json(json!(engine.job(id)?)))
}

async fn audit_log(State(engine): State<Arc<Engine>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin, "reading the audit log")?;
    Ok(Json(json!(engine.audit_log(500)?)))
}

/// Options of `POST /api/v1/vms/NAME/backup`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    /// Read every disk in full.
    #[serde(default)]
    full: bool,
    /// System disks only (default: the VM's `[backup] skeleton`).
    #[serde(default)]
    skeleton: Option<bool>,
}

/// Starts a backup in the background: `202 Accepted` with the job (and `Location:` its URL)
/// as soon as the engine has begun it; an error that comes before that (no such VM, a
/// crashed VM, a busy lock) is the answer instead.
async fn vm_backup(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Operator, "a backup")?;
    let opts: BackupBody = optional_body(&body)?;
    engine.get(name.as_str())?;
    let mut events = engine.job_events();
    let (e2, who, vm) = (engine.clone(), caller.0.who.clone(), name.to_string());
    let mut task = tokio::spawn(async move {
        let r = e2.backup_run(&vm, opts.full, opts.skeleton).await;
        let outcome = match &r {
            Ok(b) => format!("ok: backup {}", b.id),
            Err(e) => format!("error: {e}"),
        };
        e2.audit(&who, "backup", &vm, &outcome);
        r
    });
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(j) if j.vm == name.as_str() && j.kind == "backup" => {
                    let location = format!("/api/v1/jobs/{}", j.id);
                    return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(json!({"job": j}))).into_response());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the job stream closed"))
                }
            },
            done = &mut task => {
                return match done {
                    Ok(Ok(report)) => Ok((StatusCode::OK, Json(json!(report))).into_response()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the backup task failed: {e}"))),
                };
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupQuery {
    vm: Option<String>,
}

async fn backup_list(
    State(engine): State<Arc<Engine>>,
    _c: Caller,
    q: Result<Query<BackupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    if let Some(vm) = &q.vm {
        vm_name(vm)?;
    }
    let list: Vec<corral_engine::engine::backup::BackupSummary> =
        engine.backup_list(q.vm.as_deref())?.iter().map(Into::into).collect();
    Ok(Json(json!(list)))
}

/// How often the event stream looks for VM state changes.
const STATE_POLL: Duration = Duration::from_secs(1);

struct EventFeed {
    engine: Arc<Engine>,
    jobs: tokio::sync::broadcast::Receiver<corral_types::JobInfo>,
    tick: tokio::time::Interval,
    /// Each VM's state as last sent (`None` before the first look: that look sends all).
    states: Option<std::collections::HashMap<String, String>>,
    pending: std::collections::VecDeque<axum::response::sse::Event>,
}

/// `GET /api/v1/events`: server-sent events. `job` events carry a job's progress (as
/// `GET /api/v1/jobs/ID` shows it) for jobs this daemon runs; `vm` events carry a VM's
/// status when its state changes (first every VM once).
async fn events(
    State(engine): State<Arc<Engine>>,
    _c: Caller,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let feed = EventFeed {
        jobs: engine.job_events(),
        engine,
        tick: tokio::time::interval(STATE_POLL),
        states: None,
        pending: Default::default(),
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(ev) = f.pending.pop_front() {
                return Some((Ok(ev), f));
            }
            tokio::select! {
                job = f.jobs.recv() => match job {
                    Ok(j) => {
                        let ev = Event::default().event("job").json_data(&j).unwrap_or_default();
                        return Some((Ok(ev), f));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        return Some((Ok(Event::default().event("lagged").data(n.to_string())), f));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                _ = f.tick.tick() => {
                    let Ok(list) = f.engine.list().await else { continue };
                    let old = f.states.take().unwrap_or_default();
                    let mut now = std::collections::HashMap::new();
                    for st in list {
                        let v = serde_json::to_value(&st).unwrap_or(Value::Null);
                        let name = v["name"].as_str().unwrap_or_default().to_string();
                        let state = v["state"].as_str().unwrap_or_default().to_string();
                        if old.get(&name) != Some(&state) {
                            f.pending.push_back(Event::default().event("vm").json_data(&v).unwrap_or_default());
                        }
                        now.insert(name, state);
                    }
                    f.states = Some(now);
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
