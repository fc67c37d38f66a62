//! The API's error answer: a status and `{"error": "...", "kind": "..."}`, where `kind` is the
//! engine's error kind (the same word the CLI's `--json` errors carry).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    /// The resource's current `ETag` (a 412 carries it, so the caller can read again).
    pub(crate) etag: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong and, where there is one, what to do about it.
    pub error: String,
    /// A machine-readable kind: `invalid`, `not-found`, `exists`, `busy`, `wrong-state`,
    /// `in-use`, `stale`, `unauthorized`, `forbidden`, `csrf`, `precondition-required`, …
    pub kind: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            etag: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
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
            "stale" => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = ApiError::new(status, kind, e.to_string());
        if let EngineError::Stale { current, .. } = e {
            err.etag = Some(etag(current));
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.message, "kind": self.kind}))).into_response();
        if let Some(tag) = self.etag.and_then(|t| header::HeaderValue::from_str(&t).ok()) {
            r.headers_mut().insert(header::ETAG, tag);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A request body that may be empty (then `T::default()`); when present it must be exactly
/// a `T` (unknown fields are refused), else a 400 naming the problem.
pub(crate) fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    json_body(body)
}

/// A JSON request body that must be exactly a `T`: a 400 naming the field (by its path, as
/// `disks[0].size`) or the syntax error.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| body_error("the request body", e))?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))?;
    Ok(v)
}

/// A part of a request body (already parsed as JSON) that must be exactly a `T`; errors
/// name the field under `what`.
pub(crate) fn json_part<T: serde::de::DeserializeOwned>(what: &str, v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| body_error(what, e))
}

fn body_error<E: std::fmt::Display>(what: &str, e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    if path == "." {
        ApiError::bad_request(format!("{what}: {}", e.inner()))
    } else {
        ApiError::bad_request(format!("{what}: {path}: {}", e.inner()))
    }
}

/// The `ETag` of a VM record at `generation`.
pub(crate) fn etag(generation: i64) -> String {
    format!("\"{generation}\"")
}

/// A query string that does not parse (or has unknown parameters) is a 400.
pub(crate) fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

/// A VM name from a URL, checked as the CLI checks it (so `../x` is a 400, never a path).
pub(crate) fn vm_name(name: &str) -> Result<corral_types::VmName, ApiError> {
    corral_types::VmName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))
}
