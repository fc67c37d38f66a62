//! Defining, creating, editing and deleting VMs over the API: the engine calls of `corral vm
//! define`, `create`, `edit` and `delete`, answering the JSON their `--json` prints.
//!
//! An edit must say which version of the spec it changes: `If-Match` with the `ETag` of
//! `GET /api/v1/vms/NAME` (the record's generation). Without it the answer is `428`, with an
//! old one `412` (and the current `ETag`), so two editors never overwrite each other.

use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::engine::CreateOptions;
use corral_engine::DeleteReport;
use corral_types::{Accel, ByteSize, DisplayMode, NetworkMode, Role, VmSpec};
use serde::Deserialize;
use serde_json::Value;

use super::{audited, taking_work};
use crate::auth::Caller;
use crate::error::{bad_query, etag, json_body, json_part, vm_name, ApiError, ErrorBody};
use crate::AppState;

/// What `corral vm create` takes (anything left out comes from the host defaults).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    /// vCPUs (default: the host's `defaults.cpus`).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory (default: the host's `defaults.memory`).
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// A new qcow2 disk of each size; the first is the system disk.
    #[serde(default)]
    pub disks: Vec<ByteSize>,
    /// Boot this kernel directly (an absolute path on the host).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (needs `kernel`).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// An ISO attached as CD-ROM (an absolute path on the host).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub cdrom: Option<PathBuf>,
    /// Boot the CD-ROM on the first start only (needs `cdrom`).
    #[serde(default)]
    pub cdrom_once: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub accel: Option<Accel>,
    #[serde(default)]
    pub display: Option<DisplayMode>,
    #[serde(default)]
    pub network: Option<NetworkMode>,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default)]
    pub guest_agent: bool,
    #[serde(default)]
    pub balloon: bool,
}

/// `POST /api/v1/vms`: a whole spec (as `corral vm define` reads it, in JSON), or the options
/// of `corral vm create`. Exactly one of the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)] // the document's shape; the handler reads the two cases itself
pub enum DefineBody {
    Spec(Box<VmSpec>),
    Create(Box<CreateBody>),
}

impl CreateBody {
    fn into_options(self) -> Result<CreateOptions, ApiError> {
        let needs = |set: bool, field: &str, other: &str| {
            if set {
                Err(ApiError::bad_request(format!("create.{field} needs create.{other}")))
            } else {
                Ok(())
            }
        };
        needs(self.initrd.is_some() && self.kernel.is_none(), "initrd", "kernel")?;
        needs(self.cmdline.is_some() && self.kernel.is_none(), "cmdline", "kernel")?;
        needs(self.cdrom_once && self.cdrom.is_none(), "cdrom_once", "cdrom")?;
        for (field, p) in [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("cdrom", &self.cdrom),
        ] {
            if let Some(p) = p.as_ref().filter(|p| p.is_relative()) {
                return Err(ApiError::bad_request(format!(
                    "create.{field}: {} is relative; give an absolute path on the host",
                    p.display()
                )));
            }
        }
        Ok(CreateOptions {
            name: self.name,
            cpus: self.cpus,
            memory: self.memory,
            disks: self.disks,
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            cdrom: self.cdrom,
            cdrom_once: self.cdrom_once,
            tags: self.tags,
            accel: self.accel,
            display: self.display,
            network: self.network,
            autostart: self.autostart,
            guest_agent: self.guest_agent,
            balloon: self.balloon,
        })
    }
}

/// The answer to a define, create or edit: the stored spec, its `ETag` and (new VMs) where
/// it lives now.
fn spec_answer(state: &AppState, status: StatusCode, spec: VmSpec) -> Result<Response, ApiError> {
    let generation = state.engine.get(spec.name.as_str())?.generation;
    let location = format!("/api/v1/vms/{}", spec.name);
    let mut r = (status, [(header::ETAG, etag(generation))], Json(spec)).into_response();
    if status == StatusCode::CREATED {
        if let Ok(v) = header::HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(r)
}

/// Define a VM from a spec, or create one from options.
///
/// The spec is the same document `corral vm define` reads (as JSON; unknown fields refused,
/// paths absolute); the options are those of `corral vm create`. Disks with a `size` are
/// created. Nothing changes on bad input.
#[utoipa::path(
    post, operation_id = "defineVm", path = "/api/v1/vms", tag = "vms",
    request_body = DefineBody,
    responses(
        (status = 201, description = "Defined: the stored spec (as `corral vm define --json`)", body = VmSpec,
            headers(("Location" = String, description = "The new VM"), ("ETag" = String, description = "Its generation"))),
        (status = 400, description = "Bad input; the message names the field", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 409, description = "A VM of that name exists", body = ErrorBody),
    )
)]
pub async fn define(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin, "defining a VM")?;
    taking_work(&state)?;
    let doc: Value = json_body(&body)?;
    let Some(obj) = doc.as_object().filter(|o| o.len() == 1) else {
        return Err(ApiError::bad_request(
            "the request body must be {\"spec\": {…}} (a whole VM spec) or {\"create\": {…}} (the options of `corral vm create`)",
        ));
    };
    let (key, inner) = obj.iter().next().expect("one entry");
    let target = inner.get("name").and_then(Value::as_str).unwrap_or("-").to_string();
    let (action, result) = match key.as_str() {
        "spec" => ("define", state.engine.define_json(inner).map_err(ApiError::from)),
        "create" => {
            let opts = json_part::<CreateBody>("create", inner)?.into_options()?;
            ("create", state.engine.create(opts).map_err(ApiError::from))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown field `{other}`: the request body is {{\"spec\": {{…}}}} or {{\"create\": {{…}}}}"
            )))
        }
    };
    let spec = audited(&state, &caller, action, &target, result)?;
    spec_answer(&state, StatusCode::CREATED, spec)
}

/// What `If-Match` asks for.
enum Precondition {
    /// `*`: whatever the current version is.
    Any,
    Generation(Vec<i64>),
}

fn if_match(headers: &HeaderMap, required: bool) -> Result<Option<Precondition>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        if required {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "an edit needs If-Match with the ETag of GET /api/v1/vms/NAME (e.g. If-Match: \"3\"), so that it \
                 cannot overwrite someone else's change",
            ));
        }
        return Ok(None);
    };
    let bad = || ApiError::bad_request("If-Match must be an ETag of GET /api/v1/vms/NAME, such as \"3\", or *");
    let text = v.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(Some(Precondition::Any));
    }
    let tags = text
        .split(',')
        .map(|t| {
            t.trim()
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<i64>, ApiError>>()?;
    Ok(Some(Precondition::Generation(tags)))
}

/// Checks `If-Match` against the record now: the generation to update from, or a 412.
fn check_precondition(state: &AppState, name: &str, p: Option<Precondition>) -> Result<i64, ApiError> {
    let current = state.engine.get(name)?.generation;
    match p {
        Some(Precondition::Generation(g)) if !g.contains(&current) => {
            let mut e = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!(
                    "the spec of VM {name} changed since it was read (If-Match {}, now \"{current}\"); read it again \
                     and retry",
                    g.iter().map(|g| format!("\"{g}\"")).collect::<Vec<_>>().join(", ")
                ),
            );
            e.etag = Some(etag(current));
            Err(e)
        }
        _ => Ok(current),
    }
}

/// Replace a VM's spec (as `corral vm edit`).
///
/// The body is the whole new spec (the `spec` of `GET /api/v1/vms/NAME`, changed); its name
/// and uuid cannot change. Changes apply at the VM's next cold start.
#[utoipa::path(
    put, operation_id = "editVm", path = "/api/v1/vms/{name}", tag = "vms",
    params(
        ("name" = String, Path, description = "The VM"),
        ("If-Match" = String, Header, description = "The ETag of `GET /api/v1/vms/NAME` (required)"),
    ),
    request_body = VmSpec,
    responses(
        (status = 200, description = "Updated: the stored spec (as `corral vm edit --json`)", body = VmSpec,
            headers(("ETag" = String, description = "The new generation"))),
        (status = 400, description = "Bad input; the message names the field", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM is busy", body = ErrorBody),
        (status = 412, description = "The spec changed since the ETag was read; the answer carries the current ETag",
            body = ErrorBody, headers(("ETag" = String, description = "The current generation"))),
        (status = 428, description = "No If-Match header", body = ErrorBody),
    )
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Admin, "editing a VM")?;
    taking_work(&state)?;
    let pre = if_match(&headers, true)?;
    let doc: Value = json_body(&body)?;
    let result = check_precondition(&state, name.as_str(), pre)
        .and_then(|generation| Ok(state.engine.update_json(name.as_str(), &doc, generation)?));
    let spec = audited(&state, &caller, "edit", name.as_str(), result)?;
    spec_answer(&state, StatusCode::OK, spec)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Keep the disk images (only the definition goes).
    #[serde(default)]
    keep_disks: bool,
}

/// Delete a stopped VM (as `corral vm delete`): its definition and the disks corral made.
#[utoipa::path(
    delete, operation_id = "deleteVm", path = "/api/v1/vms/{name}", tag = "vms",
    params(
        ("name" = String, Path, description = "The VM"),
        ("If-Match" = Option<String>, Header, description = "When given, the ETag the VM must still have"),
        DeleteQuery,
    ),
    responses(
        (status = 200, description = "Deleted (as `corral vm delete --json`)", body = DeleteReport),
        (status = 400, description = "Bad name or query", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM runs, is busy, or linked clones stand on it", body = ErrorBody),
        (status = 412, description = "If-Match did not match", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeleteReport>, ApiError> {
    let name = vm_name(&name)?;
    caller.require(Role::Admin, "deleting a VM")?;
    taking_work(&state)?;
    let Query(q) = q.map_err(bad_query)?;
    let pre = if_match(&headers, false)?;
    let result = match check_precondition(&state, name.as_str(), pre) {
        Ok(_) => state
            .engine
            .delete(name.as_str(), q.keep_disks)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    Ok(Json(audited(&state, &caller, "delete", name.as_str(), result)?))
}
