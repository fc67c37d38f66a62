//! The web page: server-rendered HTML over the same engine (and the same helpers) as the API.
//!
//! Every page works without JavaScript: actions are plain form posts carrying the session's
//! CSRF token in a hidden `csrf` field, and data-losing ones answer a confirmation page
//! first. Our one script (`static/corral.js`) then makes it quicker: actions go to the API
//! with the `X-CSRF-Token` header without a reload (a `confirm()` first where data could be
//! lost), and VM states and job progress update live from `/api/v1/events`.
//!
//! No inline script or style anywhere, so the pages are served under
//! `Content-Security-Policy: default-src 'self'`: data for the script travels in `data-`
//! attributes and a `<meta name="csrf-token">`.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::MaybeCaller;
use crate::AppState;

mod actions;
mod alerts;
mod assets;
mod dashboard;
mod graphs;
mod host;
mod jobs;
mod layout;
mod login;
mod resources;
mod schedule_forms;
mod schedules;
mod vm;

pub use layout::Viewer;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/vms/{name}", get(vm::page))
        .route("/vms/{name}/action", post(actions::action))
        .route("/vms/{name}/restore", post(actions::restore))
        .route("/jobs", get(jobs::page))
        .route("/host", get(host::page))
        .route("/schedules", get(schedules::page).post(schedule_forms::save))
        .route("/schedules/{name}", get(schedules::detail))
        .route("/schedules/{name}/run", post(schedule_forms::run_now))
        .route("/schedules/{name}/delete", post(schedule_forms::delete))
        .route("/alerts", get(alerts::page))
        .route("/static/{file}", get(assets::file))
        .layer(middleware::map_response(security_headers))
}

/// Headers of every web answer: our own files only (so no injected script could run even
/// if some text escaped escaping), never inside a frame (clickjacking), no URL leaks to
/// other sites, no content-type guessing.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Outside `/api/`, the API's JSON "no such path" becomes a page.
pub(crate) async fn html_not_found(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let r = next.run(req).await;
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if api || r.status() != StatusCode::NOT_FOUND || !json {
        return r;
    }
    security_headers(layout::error_page(
        StatusCode::NOT_FOUND,
        "There is no page at this address.",
    ))
    .await
}

/// A page's caller: without a login, the answer is a redirect to `/login`.
impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        match MaybeCaller::from_request_parts(parts, state).await {
            Ok(MaybeCaller(Some(caller))) => Ok(Viewer { caller }),
            Ok(MaybeCaller(None)) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(layout::PageError(e).into_response()),
        }
    }
}
