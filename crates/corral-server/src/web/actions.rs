//! Acting on VMs from the page: the buttons, and the form posts they make without
//! JavaScript (with it, our script calls the API instead). Each post checks the form's
//! CSRF token and the caller's role, makes the same engine call as the API and writes the
//! audit log the same way; long operations (backup, restore) run as jobs through the API's
//! `accepted`.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use corral_engine::engine::restore::RestoreRequest;
use corral_types::{Role, RunState};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{html_response, shell, PageError, Section, Viewer};
use crate::api::jobs::accepted;
use crate::api::{audited, taking_work};
use crate::error::{vm_name, ApiError};
use crate::AppState;

/// One button: the action, its label, the states it applies to, and the question to ask
/// first when it can lose data.
struct Act {
    action: &'static str,
    label: &'static str,
    when: &'static [RunState],
    confirm: Option<&'static str>,
}

use RunState::{Crashed, Paused, Running, Saved, Stopped};

const START: Act = Act {
    action: "start",
    label: "Start",
    when: &[Stopped, Saved, Crashed],
    confirm: None,
};
const SAVE: Act = Act {
    action: "save",
    label: "Save",
    when: &[Running, Paused],
    confirm: None,
};
const STOP: Act = Act {
    action: "stop",
    label: "Stop",
    when: &[Running, Paused],
    confirm: Some(
        "The guest is asked to shut down; if it has not within the timeout, corral ends it and \
         whatever the guest had not written to its disks is lost.",
    ),
};
const BACKUP: Act = Act {
    action: "backup",
    label: "Backup",
    when: &[Stopped, Running, Paused, Saved, Crashed],
    confirm: None,
};
const PAUSE: Act = Act {
    action: "pause",
    label: "Pause",
    when: &[Running],
    confirm: None,
};
const RESUME: Act = Act {
    action: "resume",
    label: "Resume",
    when: &[Paused],
    confirm: None,
};
const KILL: Act = Act {
    action: "kill",
    label: "Force stop",
    when: &[Running, Paused],
    confirm: Some(
        "QEMU is ended at once, like pulling the plug: whatever the guest had not written to its \
         disks is lost.",
    ),
};

fn find(action: &str) -> Option<&'static Act> {
    [&START, &SAVE, &STOP, &BACKUP, &PAUSE, &RESUME, &KILL]
        .into_iter()
        .find(|a| a.action == action)
}

/// A VM's action buttons in one form. `from` says where the form post returns (`vm`: the
/// VM's page; otherwise the dashboard); `more` adds pause, resume and force stop.
pub fn buttons(vm: &str, state: RunState, csrf: &str, from: &str, more: bool) -> Markup {
    let acts: &[&Act] = if more {
        &[&START, &SAVE, &STOP, &BACKUP, &PAUSE, &RESUME, &KILL]
    } else {
        &[&START, &SAVE, &STOP, &BACKUP]
    };
    html! {
        form.acts method="post" action=(format!("/vms/{vm}/action")) data-act-vm=(vm) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="from" value=(from);
            @for a in acts {
                @let when: Vec<&str> = a.when.iter().map(|s| s.as_str()).collect();
                button type="submit" name="action" value=(a.action)
                    class=(if a.confirm.is_some() { "danger" } else { "" })
                    aria-label=(format!("{} {vm}", a.label))
                    data-when=(when.join(" "))
                    data-confirm=[a.confirm.map(|c| format!("{} {vm}? {c}", a.label))]
                    disabled[!a.when.contains(&state)] { (a.label) }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    action: String,
    from: Option<String>,
    /// `yes` once the confirmation page (or the script's `confirm()`) was answered.
    confirmed: Option<String>,
}

fn back_to(vm: &str, from: Option<&str>) -> String {
    match from {
        Some("vm") => format!("/vms/{vm}"),
        _ => "/".to_string(),
    }
}

/// A form's fields, or a 400 page saying which is missing or malformed.
pub(super) fn form_fields<T>(f: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    f.map(|Form(t)| t).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `POST /vms/NAME/action` (fields `csrf`, `action`, `from`, `confirmed`).
pub async fn action(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form_fields(f)?;
    let name = vm_name(&name)?;
    let caller = &viewer.caller;
    caller.check_form_csrf(f.csrf.as_deref())?;
    caller.require(Role::Operator, &format!("{} of a VM", f.action))?;
    let vm = name.as_str();
    let act = find(&f.action).ok_or_else(|| ApiError::not_found(format!("no action {:?}", f.action)))?;
    let back = back_to(vm, f.from.as_deref());
    state.engine.get(vm)?;
    if let (Some(why), false) = (act.confirm, f.confirmed.as_deref() == Some("yes")) {
        let fields = [("action", act.action), ("from", f.from.as_deref().unwrap_or(""))];
        let title = format!("{} {vm}?", act.label);
        return Ok(confirm_page(
            &viewer,
            Section::Vms,
            &title,
            why,
            &format!("/vms/{vm}/action"),
            &fields,
            act.label,
            &back,
        ));
    }
    taking_work(&state)?;
    let engine = state.engine.clone();
    let result = match act.action {
        "start" => engine.start(vm).await.map(drop),
        "stop" => engine.stop(vm, None, false).await.map(drop),
        "save" => engine.save(vm).await.map(drop),
        "pause" => engine.pause(vm).await,
        "resume" => engine.resume(vm).await.map(drop),
        "kill" => engine.kill(vm).await,
        _ => {
            let owned = vm.to_string();
            accepted(
                &state,
                caller,
                vm,
                "backup",
                async move { engine.backup_run(&owned, false, None).await },
                |b| format!("backup {}", b.id),
                None,
            )
            .await?;
            return Ok(Redirect::to("/jobs").into_response());
        }
    };
    audited(&state, caller, act.action, vm, result.map_err(ApiError::from))?;
    Ok(Redirect::to(&back).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RestoreForm {
    csrf: Option<String>,
    backup: String,
    /// `new` (as the VM `as_name`) or `in-place`.
    mode: String,
    as_name: Option<String>,
    confirmed: Option<String>,
}

/// `POST /vms/NAME/restore` (fields `csrf`, `backup`, `mode`, `as_name`, `confirmed`): a
/// restore job of one of this VM's backups, as a new VM or (confirmed) over its own disks.
pub async fn restore(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    f: Result<Form<RestoreForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form_fields(f)?;
    let name = vm_name(&name)?;
    let caller = &viewer.caller;
    caller.check_form_csrf(f.csrf.as_deref())?;
    caller.require(Role::Operator, "a restore")?;
    let m = state.engine.backup_manifest(&f.backup)?;
    if m.vm != name.as_str() {
        return Err(ApiError::bad_request(format!("backup {} is of VM {}, not {name}", m.id, m.vm)).into());
    }
    let (req, job_vm) = match f.mode.as_str() {
        "new" => {
            let as_name = f.as_name.as_deref().map(str::trim).unwrap_or("");
            if as_name.is_empty() {
                return Err(ApiError::bad_request("restoring as a new VM needs the new VM's name").into());
            }
            let new = vm_name(as_name)?;
            let req = RestoreRequest {
                id: m.id.clone(),
                as_name: Some(new.to_string()),
                ..Default::default()
            };
            (req, new.to_string())
        }
        "in-place" => {
            if f.confirmed.as_deref() != Some("yes") {
                let why = "Its disks are overwritten with the backup: everything written since the backup \
                           is lost. The VM must be stopped.";
                let title = format!("Restore {name} from backup {}?", m.id);
                let fields = [("backup", m.id.as_str()), ("mode", "in-place")];
                let back = format!("/vms/{name}");
                return Ok(confirm_page(
                    &viewer,
                    Section::Vms,
                    &title,
                    why,
                    &format!("/vms/{name}/restore"),
                    &fields,
                    "Restore in place",
                    &back,
                ));
            }
            let req = RestoreRequest {
                id: m.id.clone(),
                in_place: true,
                ..Default::default()
            };
            (req, name.to_string())
        }
        other => return Err(ApiError::bad_request(format!("no restore mode {other:?}: use new or in-place")).into()),
    };
    let engine = state.engine.clone();
    accepted(
        &state,
        caller,
        &job_vm,
        "restore",
        async move { engine.backup_restore(&req).await },
        |r| format!("restore {} → {}", r.backup, r.vm),
        None,
    )
    .await?;
    Ok(Redirect::to("/jobs").into_response())
}

/// The page that asks before a data-losing action when the script did not (no JavaScript):
/// the same form again with `confirmed=yes`, and a way back.
#[allow(clippy::too_many_arguments)]
pub(super) fn confirm_page(
    viewer: &Viewer,
    section: Section,
    title: &str,
    why: &str,
    post_to: &str,
    fields: &[(&str, &str)],
    button: &str,
    back: &str,
) -> Response {
    let body = html! {
        div.narrow {
            h1 { (title) }
            p { (why) }
            form.inline method="post" action=(post_to) {
                input type="hidden" name="csrf" value=(viewer.csrf());
                input type="hidden" name="confirmed" value="yes";
                @for (k, v) in fields {
                    input type="hidden" name=(k) value=(v);
                }
                button.danger type="submit" { (button) }
                " "
                a href=(back) { "Cancel" }
            }
        }
    };
    html_response(StatusCode::OK, shell(title, Some(viewer), section, body))
}
