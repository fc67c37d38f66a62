//! `corral serve`: a versioned REST API (`/api/v1`) and a web page (`/`, see [`web`]) over
//! the same engine the CLI uses, so all of them take the same per-VM locks and cannot race.
//!
//! Every call needs a bearer token (`corral token create --role R`); a viewer reads, an
//! operator also acts on VMs, an admin also reads the audit log. Every mutating call is
//! written to the audit log with its outcome. VM names from URLs go through the same
//! validation as on the command line, so `../x` is a 400, never a path.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use corral_engine::Engine;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod alerting;
mod api;
pub mod auth;
mod error;
pub mod prometheus;
mod tls;
mod web;
pub use error::ApiError;
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

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub sessions: Arc<auth::Sessions>,
    pub limiter: Arc<auth::LoginLimiter>,
    /// Jobs started by calls (backups, restores, clones…), which outlive their call.
    pub jobs: TaskTracker,
    /// Cancelled at the first SIGTERM: no new work is taken, event streams end.
    pub stop: CancellationToken,
    /// Cancelled at the second: running jobs are cancelled.
    pub cancel: CancellationToken,
    /// Served over TLS (session cookies are then `Secure`).
    pub tls: bool,
    /// The results of the last jobs started by calls, by job id, for `GET /api/v1/jobs/ID`
    /// (a remote CLI prints them as the local one prints the engine's answer).
    pub results: Arc<std::sync::Mutex<std::collections::VecDeque<(i64, JobResult)>>>,
    /// Resource use, sampled every `metrics.interval` while the server runs (see [`run`]).
    pub sampler: Arc<corral_engine::metrics::Sampler>,
    /// What `GET /metrics` remembers between scrapes (backup manifests read, job failures).
    pub exporter: Arc<prometheus::Exporter>,
}

/// What a job started by a call ended with: the call's answer, or its error.
pub type JobResult = Result<serde_json::Value, ApiError>;

/// How many job results the daemon keeps for `GET /api/v1/jobs/ID`.
pub const KEPT_RESULTS: usize = 256;

impl AppState {
    pub fn new(engine: Arc<Engine>, tls: bool) -> AppState {
        AppState {
            sampler: Arc::new(corral_engine::metrics::Sampler::new(engine.clone())),
            exporter: Default::default(),
            engine,
            sessions: Default::default(),
            limiter: Default::default(),
            jobs: TaskTracker::new(),
            stop: CancellationToken::new(),
            cancel: CancellationToken::new(),
            tls,
            results: Default::default(),
        }
    }

    /// Keeps the result of job `id` (the oldest kept one goes).
    pub(crate) fn keep_result(&self, id: i64, result: JobResult) {
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= KEPT_RESULTS {
            r.pop_front();
        }
        r.push_back((id, result));
    }

    /// The kept result of job `id`, as the API answers it.
    pub(crate) fn result_of(&self, id: i64) -> Option<serde_json::Value> {
        let r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().find(|(i, _)| *i == id).map(|(_, res)| match res {
            Ok(v) => serde_json::json!({"ok": v}),
            Err(e) => serde_json::json!({"error": e.message, "kind": e.kind}),
        })
    }

    /// After the listener closed: waits for the jobs calls started, or cancels them when
    /// `cancel` is cancelled (a second SIGTERM). VMs are not touched either way.
    pub async fn finish_jobs(&self) {
        self.jobs.close();
        if !self.jobs.is_empty() {
            tracing::warn!(
                jobs = self.jobs.len(),
                "waiting for running jobs to finish (a second SIGTERM cancels them)"
            );
        }
        self.jobs.wait().await;
    }
}

/// Serves plain HTTP until `shutdown` completes: then no new connections are taken, calls in
/// flight finish, event streams end, and jobs started by calls are waited for.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::new(engine, false);
    let stop = state.stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    run(state, listener, None).await
}

/// Serves `state`'s router on `listener` (TLS with `tls`) until `state.stop` is cancelled,
/// then waits for the jobs calls started (see [`AppState::finish_jobs`]).
pub async fn run(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<&TlsSource>,
) -> Result<(), ServeError> {
    let app = router(state.clone());
    let stop = state.stop.clone();
    let sampler = state.sampler.clone();
    // Every pass is kept in <data_dir>/metrics.db for the graphs; without it the daemon still
    // samples (alerts, exporters) and the history calls answer 503 saying why.
    if sampler.history().is_err() {
        if let Err(e) = sampler.open_history() {
            tracing::warn!("metrics: no history will be kept: {e}");
        }
    }
    let sampler_stop = stop.clone();
    let sampling = tokio::spawn(async move { sampler.run(sampler_stop.cancelled()).await });
    let alerting = tokio::spawn(alerting::run(state.sampler.clone(), stop.clone()));
    match tls {
        Some(source) => {
            let (config, _) = tls::server_config(source)?;
            tls::serve_tls(listener, app, config, async move { stop.cancelled().await }).await?;
        }
        None => {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await?;
        }
    }
    let _ = sampling.await;
    let _ = alerting.await;
    state.finish_jobs().await;
    Ok(())
}

/// The certificate file a TLS server presents (made now if it is to be self-signed).
pub fn tls_certificate(source: &TlsSource) -> Result<std::path::PathBuf, ServeError> {
    tls::server_config(source).map(|(_, cert)| cert)
}

/// The whole HTTP surface: the API under `/api/v1`, Prometheus's `/metrics`, the web page
/// everywhere else.
pub fn router(state: AppState) -> Router {
    web::router()
        .merge(api::router())
        .merge(prometheus::router())
        .layer(axum::middleware::from_fn(web::html_not_found))
        .with_state(state)
}
