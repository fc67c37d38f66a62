//! `/login` and `/logout`: a user's password checked under the same rate limit as the API's
//! login, and the session cookie.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::layout::{html_response, shell, PageError, Section};
use crate::api::session::{check_login, clear_cookie, session_cookie};
use crate::auth::{cookie, MaybeCaller, Peer, SESSION_COOKIE};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// `GET /login`: the form (a logged-in user goes on to the VMs).
pub async fn page(State(state): State<AppState>, MaybeCaller(c): MaybeCaller) -> Response {
    if c.is_some() {
        return Redirect::to("/").into_response();
    }
    render(&state, StatusCode::OK, None, "")
}

/// The login form, with `error` above it; when nobody can log in yet, how to create the
/// first user (there is no default password).
fn render(state: &AppState, status: StatusCode, error: Option<&str>, user: &str) -> Response {
    let no_users = state.engine.users().map(|u| u.is_empty()).unwrap_or(false);
    let body = html! {
        div.narrow {
            h1 { "Log in to corral" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            @if no_users {
                section.notice aria-labelledby="first-user" {
                    h2 #first-user { "No user exists yet" }
                    p { "Create the first one on the host, as the user corral runs as:" }
                    pre { code { "corral user add NAME --role admin --password-stdin" } }
                    p { "It reads the password from its standard input. corral has no default password." }
                }
            }
            form.stack method="post" action="/login" {
                label for="user" { "User name" }
                input #user type="text" name="user" value=(user) autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button.primary type="submit" { "Log in" }
            }
        }
    };
    html_response(status, shell("Log in", None, Section::None, body))
}

/// `POST /login` (form fields `user`, `password`): on success the session cookie and a
/// redirect to the VMs; otherwise the form again with the reason (401, or 429 with the wait).
pub async fn submit(
    State(state): State<AppState>,
    Peer(peer): Peer,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return render(
            &state,
            StatusCode::BAD_REQUEST,
            Some("The form needs a user name and a password."),
            "",
        );
    };
    match check_login(&state, peer, &f.user, &f.password).await {
        Ok((id, _csrf)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, session_cookie(&state, &id)),
            ],
        )
            .into_response(),
        Err(e) => render(&state, e.status(), Some(e.message()), &f.user),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /logout` (with the session's `csrf` field): ends the session.
pub async fn logout(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    parts: Parts,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    if let Some(c) = caller {
        let field = form.ok().and_then(|Form(f)| f.csrf);
        c.check_form_csrf(field.as_deref())?;
        if let Some(id) = cookie(&parts, SESSION_COOKIE) {
            state.sessions.end(id);
        }
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (header::SET_COOKIE, clear_cookie(&state)),
        ],
    )
        .into_response())
}
