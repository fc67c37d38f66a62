//! Changing schedules from the page: the add/edit form and the buttons, and their posts.
//! Each post checks the form's CSRF token and the caller's role, makes the engine call the
//! API makes and writes an audit line. Saving and deleting edit the host config, so they are
//! for admins; "Run now" is for operators, like starting a backup by hand.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use corral_types::{Role, ScheduleAction, ScheduleSpec, VmName};
use maud::{html, Markup};
use serde::Deserialize;

use super::actions::{confirm_page, form_fields};
use super::layout::{html_response, shell, PageError, Section, Viewer};
use crate::api::audited;
use crate::error::ApiError;
use crate::AppState;

/// A schedule name from a path: the same rule as VM names, so it is safe in a URL.
pub fn schedule_name(name: &str) -> Result<&str, ApiError> {
    VmName::new(name)
        .map(|_| name)
        .map_err(|_| ApiError::not_found(format!("no schedule named {name:?}")))
}

/// The add/edit form as posted (and as shown again after a mistake): text as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScheduleForm {
    csrf: Option<String>,
    name: String,
    calendar: String,
    action: String,
    /// VM names, separated by commas or spaces.
    vms: String,
    tags: String,
    /// Checkboxes: present when ticked.
    all: Option<String>,
    full: Option<String>,
    /// `default` (each VM's own setting), `on`, `off`.
    skeleton: String,
    keep_last: String,
    keep_daily: String,
    keep_weekly: String,
    keep_monthly: String,
    enabled: Option<String>,
    /// `yes` from a schedule's own page (the name is fixed there).
    editing: Option<String>,
}

fn ticked(b: bool) -> Option<String> {
    b.then(|| "on".to_string())
}

fn num(n: Option<u32>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

impl ScheduleForm {
    /// An empty form for a new backup schedule (enabled), with a calendar if one was checked.
    pub fn new(calendar: Option<&str>) -> ScheduleForm {
        ScheduleForm {
            calendar: calendar.unwrap_or("").to_string(),
            action: "backup".into(),
            skeleton: "default".into(),
            enabled: ticked(true),
            ..Default::default()
        }
    }

    pub fn from_spec(s: &ScheduleSpec) -> ScheduleForm {
        ScheduleForm {
            csrf: None,
            name: s.name.clone(),
            calendar: s.calendar.clone(),
            action: s.action.as_str().into(),
            vms: s.vms.join(", "),
            tags: s.tags.join(", "),
            all: ticked(s.all),
            full: ticked(s.full),
            skeleton: match s.skeleton {
                None => "default",
                Some(true) => "on",
                Some(false) => "off",
            }
            .into(),
            keep_last: num(s.keep_last),
            keep_daily: num(s.keep_daily),
            keep_weekly: num(s.keep_weekly),
            keep_monthly: num(s.keep_monthly),
            enabled: ticked(s.enabled),
            editing: None,
        }
    }

    /// The spec the form describes; what is wrong with a field otherwise (the engine then
    /// checks the whole, calendar included).
    pub fn to_spec(&self) -> Result<ScheduleSpec, String> {
        let action = match self.action.as_str() {
            "backup" => ScheduleAction::Backup,
            "verify" => ScheduleAction::Verify,
            "prune" => ScheduleAction::Prune,
            "gc" => ScheduleAction::Gc,
            other => return Err(format!("no action {other:?}: choose backup, verify, prune or gc")),
        };
        let list = |s: &str| -> Vec<String> {
            s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        let keep = |field: &str, v: &str| -> Result<Option<u32>, String> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| format!("{field}: {v:?} is not a whole number (leave it empty for none)"))
        };
        let skeleton = match self.skeleton.as_str() {
            "" | "default" => None,
            "on" => Some(true),
            "off" => Some(false),
            other => return Err(format!("skeleton: {other:?} is not default, on or off")),
        };
        let mut spec = ScheduleSpec::new(self.name.trim(), self.calendar.trim(), action);
        spec.vms = list(&self.vms);
        spec.tags = list(&self.tags);
        spec.all = self.all.is_some();
        spec.full = self.full.is_some();
        spec.skeleton = skeleton;
        spec.keep_last = keep("keep_last", &self.keep_last)?;
        spec.keep_daily = keep("keep_daily", &self.keep_daily)?;
        spec.keep_weekly = keep("keep_weekly", &self.keep_weekly)?;
        spec.keep_monthly = keep("keep_monthly", &self.keep_monthly)?;
        spec.enabled = self.enabled.is_some();
        Ok(spec)
    }
}

/// The add (or, `editing`, edit) form, filled with `f`.
pub fn form(viewer: &Viewer, f: &ScheduleForm, editing: bool) -> Markup {
    let id = |field: &str| format!("s-{field}");
    let text = |field: &str, label: &str, value: &str, hint: &str| {
        html! {
            label for=(id(field)) { (label) }
            input id=(id(field)) type="text" name=(field) value=(value) placeholder=(hint);
        }
    };
    let keep = |field: &str, value: &str| {
        html! {
            label for=(id(field)) { (field) }
            input id=(id(field)) type="number" min="0" name=(field) value=(value);
        }
    };
    html! {
        form.schedule method="post" action="/schedules" {
            input type="hidden" name="csrf" value=(viewer.csrf());
            @if editing { input type="hidden" name="editing" value="yes"; }
            div.fields {
                label for="s-name" { "Name" }
                input #s-name type="text" name="name" value=(f.name) required readonly[editing]
                    placeholder="nightly";
                (text("calendar", "Calendar", &f.calendar, "mon..fri 22:30"))
                label for="s-action" { "Action" }
                select #s-action name="action" {
                    @for a in ["backup", "verify", "prune", "gc"] {
                        option value=(a) selected[f.action == a] { (a) }
                    }
                }
            }
            fieldset {
                legend { "Selection (one of them; none for gc)" }
                div.fields {
                    (text("vms", "VMs", &f.vms, "web1, db1"))
                    (text("tags", "Tags", &f.tags, "prod"))
                    label for="s-all" { "All VMs" }
                    input #s-all type="checkbox" name="all" checked[f.all.is_some()];
                }
            }
            fieldset {
                legend { "Backup options" }
                div.fields {
                    label for="s-full" { "Full read" }
                    input #s-full type="checkbox" name="full" checked[f.full.is_some()];
                    label for="s-skeleton" { "Skeleton" }
                    select #s-skeleton name="skeleton" {
                        @for (v, l) in [("default", "each VM's own setting"), ("on", "on: system disks only"), ("off", "off: every disk")] {
                            option value=(v) selected[f.skeleton == v] { (l) }
                        }
                    }
                }
            }
            fieldset {
                legend { "Prune: backups to keep" }
                div.fields {
                    (keep("keep_last", &f.keep_last))
                    (keep("keep_daily", &f.keep_daily))
                    (keep("keep_weekly", &f.keep_weekly))
                    (keep("keep_monthly", &f.keep_monthly))
                }
            }
            div.fields {
                label for="s-enabled" { "Enabled" }
                input #s-enabled type="checkbox" name="enabled" checked[f.enabled.is_some()];
            }
            button.primary type="submit" { "Save schedule" }
        }
    }
}

/// A schedule's buttons: "Run now" (operators), "Edit" and "Delete" (admins).
pub fn buttons(spec: &ScheduleSpec, viewer: &Viewer) -> Markup {
    let name = &spec.name;
    html! {
        form.inline method="post" action=(format!("/schedules/{name}/run")) {
            input type="hidden" name="csrf" value=(viewer.csrf());
            button type="submit" aria-label=(format!("Run {name} now")) { "Run now" }
        }
        @if viewer.role() >= Role::Admin {
            a href=(format!("/schedules/{name}#edit")) aria-label=(format!("Edit {name}")) { "Edit" }
            " "
            form.inline method="post" action=(format!("/schedules/{name}/delete")) {
                input type="hidden" name="csrf" value=(viewer.csrf());
                input type="hidden" name="confirmed" value="";
                button.danger type="submit" aria-label=(format!("Delete {name}"))
                    data-confirm=(format!("Delete schedule {name}? {DELETE_WHY}")) { "Delete" }
            }
        }
    }
}

const DELETE_WHY: &str = "Its [[schedule]] table is removed from the host config and it no longer runs; \
                          its past runs stay listed.";

/// The form again after a mistake: what was typed, the message, and the error's status.
fn form_again(viewer: &Viewer, f: &ScheduleForm, e: &ApiError) -> Response {
    let editing = f.editing.as_deref() == Some("yes");
    let title = if editing {
        format!("Edit schedule {}", f.name.trim())
    } else {
        "Add a schedule".to_string()
    };
    let body = html! {
        p.crumbs { a href="/schedules" { "Schedules" } }
        h1 { (title) }
        p.error role="alert" { (e.message()) }
        p.muted { "Nothing was changed." }
        (form(viewer, f, editing))
    };
    html_response(e.status(), shell(&title, Some(viewer), Section::Schedules, body))
}

/// `POST /schedules`: add a schedule, or replace the one with that name.
pub async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    f: Result<Form<ScheduleForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form_fields(f)?;
    let caller = &viewer.caller;
    caller.check_form_csrf(f.csrf.as_deref())?;
    caller.require(Role::Admin, "editing a schedule (the host config)")?;
    let result = f
        .to_spec()
        .map_err(|m| ApiError::bad_request(format!("schedule {:?}: {m}", f.name.trim())))
        .and_then(|spec| state.engine.schedule_put(spec).map_err(ApiError::from));
    let name = f.name.trim();
    match audited(&state, caller, "schedule-put", name, result) {
        Ok(()) => Ok(Redirect::to(&format!("/schedules/{name}?done=saved&schedule={name}")).into_response()),
        Err(e) if e.status() == StatusCode::FORBIDDEN => Err(e.into()),
        Err(e) => Ok(form_again(&viewer, &f, &e)),
    }
}

#[derive(Debug, Deserialize)]
pub struct ButtonForm {
    csrf: Option<String>,
    /// `yes` once the confirmation page (or the script's `confirm()`) was answered.
    confirmed: Option<String>,
}

/// `POST /schedules/NAME/run`: starts a run and returns at once (its result lands in the
/// runs table); a run already going is a 409.
pub async fn run_now(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    f: Result<Form<ButtonForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form_fields(f)?;
    let name = schedule_name(&name)?;
    let caller = &viewer.caller;
    caller.check_form_csrf(f.csrf.as_deref())?;
    caller.require(Role::Operator, "running a schedule")?;
    crate::api::schedules::start_run(&state, caller, name)?;
    Ok(Redirect::to(&format!("/schedules/{name}?done=started&schedule={name}")).into_response())
}

/// `POST /schedules/NAME/delete`: a confirmation page first, then out of the config file.
pub async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    f: Result<Form<ButtonForm>, FormRejection>,
) -> Result<Response, PageError> {
    let f = form_fields(f)?;
    let name = schedule_name(&name)?;
    let caller = &viewer.caller;
    caller.check_form_csrf(f.csrf.as_deref())?;
    caller.require(Role::Admin, "deleting a schedule (the host config)")?;
    state.engine.schedule_spec(name)?;
    if f.confirmed.as_deref() != Some("yes") {
        return Ok(confirm_page(
            &viewer,
            Section::Schedules,
            &format!("Delete schedule {name}?"),
            DELETE_WHY,
            &format!("/schedules/{name}/delete"),
            &[],
            "Delete",
            &format!("/schedules/{name}"),
        ));
    }
    let r = state.engine.schedule_delete(name).map_err(ApiError::from);
    audited(&state, caller, "schedule-delete", name, r)?;
    Ok(Redirect::to(&format!("/schedules?done=deleted&schedule={name}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_back_what_a_spec_wrote() {
        let mut s = ScheduleSpec::new("n", "sun 04:00", ScheduleAction::Prune);
        s.vms = vec!["a".into(), "b".into()];
        s.keep_daily = Some(7);
        s.enabled = false;
        assert_eq!(ScheduleForm::from_spec(&s).to_spec().unwrap(), s);
        let mut s = ScheduleSpec::new("b", "daily", ScheduleAction::Backup);
        s.tags = vec!["prod".into()];
        s.full = true;
        s.skeleton = Some(false);
        assert_eq!(ScheduleForm::from_spec(&s).to_spec().unwrap(), s);
    }

    #[test]
    fn lists_split_on_commas_and_spaces_and_bad_numbers_say_which_field() {
        let f = ScheduleForm {
            name: "x".into(),
            calendar: "daily".into(),
            action: "verify".into(),
            vms: " a, b  c,,".into(),
            ..ScheduleForm::new(None)
        };
        assert_eq!(f.to_spec().unwrap().vms, ["a", "b", "c"]);
        let f = ScheduleForm {
            keep_weekly: "two".into(),
            ..f
        };
        assert!(f.to_spec().unwrap_err().starts_with("keep_weekly: \"two\""));
    }
}
