//! `/schedules`: scheduled jobs. The scheduler lives in the engine; until it is there, the
//! page says so.

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::layout::{html_response, shell, Section, Viewer};

/// `GET /schedules`.
pub async fn page(viewer: Viewer) -> Response {
    let body = html! {
        h1 { "Schedules" }
        p { "Scheduled jobs arrive with the scheduler: this corral has none yet." }
        p { "Backups run on demand meanwhile, from the " a href="/" { "VM list" } " or with " code { "corral backup run" } "." }
    };
    html_response(
        StatusCode::OK,
        shell("Schedules", Some(&viewer), Section::Schedules, body),
    )
}
