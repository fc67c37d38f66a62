//! The OpenAPI document of `/api/v1`, made from the handlers' `#[utoipa::path]` annotations
//! and the wire types' schemas, served at `GET /api/v1/openapi.json` (no credentials
//! needed). A copy is kept in `docs/api/openapi.json`; a test fails when the two differ.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{alerts, backups, define, events, jobs, metrics, schedules, session, snapshots, vms};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "corral",
        description = "The REST API of `corral serve`: VMs, snapshots, clones, backups and jobs over the \
                       same engine as the corral CLI, with the same JSON as its `--json` output.\n\n\
                       Bodies are JSON; unknown fields are refused (400, naming the field). Errors are \
                       `{\"error\", \"kind\"}`. Long operations answer `202 Accepted` with their job \
                       (`Location: /api/v1/jobs/ID`); `/api/v1/events` streams their progress. Roles: a \
                       viewer reads; an operator also acts on VMs, snapshots and backups; an admin also \
                       defines, edits, clones and deletes VMs and reads the audit log. A call made with a \
                       login session must carry the session's CSRF token in `X-CSRF-Token` when it \
                       changes anything.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        session::login, session::logout, session::whoami, super::audit_log,
        vms::list, vms::show, vms::action,
        define::define, define::edit, define::delete,
        snapshots::list, snapshots::show, snapshots::create, snapshots::revert, snapshots::delete,
        snapshots::clone,
        backups::run, backups::list, backups::show, backups::restore, backups::verify, backups::prune,
        backups::gc,
        schedules::list, schedules::put, schedules::delete, schedules::run_now, schedules::runs,
        jobs::list, jobs::show, events::events,
        alerts::list,
        metrics::latest, metrics::vm_history, metrics::host_history,
        serve,
    ),
    components(schemas(vms::Action, corral_types::WebhookPayload)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    tags(
        (name = "vms", description = "Define, edit, start, stop, clone and delete VMs"),
        (name = "snapshots", description = "Internal snapshots of a VM's disks (and memory)"),
        (name = "backups", description = "Backups in the deduplicating store: run, list, restore, verify, prune"),
        (name = "jobs", description = "Long operations and the event stream"),
        (name = "metrics", description = "Resource use of VMs and the host: the latest sample and the history kept for graphs"),
        (name = "schedules", description = "Scheduled backups, verifies, prunes and gc (`[[schedule]]` in the host config)"),
        (name = "alerts", description = "Threshold and built-in alerts (`[[alert]]` in the host config): firing and past"),
        (name = "session", description = "Logging in (the web page), the caller, the audit log"),
    ),
)]
pub struct ApiDoc;

/// The ways to authenticate.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`corral token create --role ROLE`)"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "The session cookie set by `POST /api/v1/login`",
            ))),
        );
        c.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's CSRF token (from login or whoami); needed on every call that changes something",
            ))),
        );
    }
}

/// The document as served and as kept in `docs/api/openapi.json`.
pub fn document() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}

static DOCUMENT: LazyLock<String> = LazyLock::new(document);

/// This document.
#[utoipa::path(
    get, operation_id = "openapi", path = "/api/v1/openapi.json", tag = "session", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn committed() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json")
    }

    /// The document in the repository is the one the code makes.
    #[test]
    fn openapi_document_is_committed() {
        let doc = super::document();
        let path = committed();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &doc).unwrap();
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == doc,
            "{} differs from the document the code makes (GET /api/v1/openapi.json); regenerate it with\n    \
             UPDATE_OPENAPI=1 cargo test -p corral-server openapi\nand commit it",
            path.display()
        );
    }

    /// Every path has its operations documented with an error answer, and the security
    /// schemes are there.
    #[test]
    fn openapi_document_covers_errors_and_security() {
        let v: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let schemes = &v["components"]["securitySchemes"];
        for s in ["bearer", "session", "csrf"] {
            assert!(schemes.get(s).is_some(), "no security scheme {s}");
        }
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}: no responses");
                if method != "get" && path != "/api/v1/logout" {
                    assert!(
                        responses.contains_key("400") || responses.contains_key("401"),
                        "{method} {path}"
                    );
                }
            }
        }
    }
}
