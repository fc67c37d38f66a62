//! Logging in and out with a user's password: the session cookie of the web page (scripts
//! use bearer tokens instead).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_types::Role;
use serde::Deserialize;

use crate::auth::{cookie, Caller, Peer, SESSION_COOKIE};
use crate::error::{json_body, ApiError, ErrorBody};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn session_cookie(state: &AppState, id: &str) -> String {
    let secure = if state.tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

pub(crate) fn clear_cookie(state: &AppState) -> String {
    let secure = if state.tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Checks a password under the rate limit; the session id and its CSRF token on success.
pub(crate) async fn check_login(
    state: &AppState,
    peer: Option<SocketAddr>,
    user: &str,
    password: &str,
) -> Result<(String, String), ApiError> {
    let ip = peer.map(|p| p.ip());
    if let Some(wait) = state.limiter.wait(user, ip) {
        state
            .engine
            .audit(&format!("login {user}"), "login", user, "refused: rate limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many failed logins; try again in {} s", wait.as_secs().max(1)),
        ));
    }
    let (engine, u, p) = (state.engine.clone(), user.to_string(), password.to_string());
    // argon2 is deliberately slow: off the async workers.
    let principal = tokio::task::spawn_blocking(move || engine.user_login(&u, &p))
        .await
        .map_err(|e| ApiError::internal(format!("the login check failed: {e}")))??;
    match principal {
        Some(_) => {
            state.limiter.succeeded(user);
            state.engine.audit(&format!("user {user}"), "login", user, "ok");
            let (id, session) = state.sessions.create(user);
            Ok((id, session.csrf))
        }
        None => {
            state.limiter.failed(user, ip);
            state
                .engine
                .audit(&format!("login {user}"), "login", user, "error: wrong user or password");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong user name or password",
            ))
        }
    }
}

/// A new session.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LoginAnswer {
    pub user: String,
    pub role: Option<Role>,
    /// Send it as `X-CSRF-Token` with every mutating call of this session.
    pub csrf: String,
}

/// Who is calling.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// `user NAME`, or the token's description.
    pub who: String,
    pub role: Role,
    /// The session's CSRF token (sessions only): send it as `X-CSRF-Token` with every
    /// mutating call.
    pub csrf: Option<String>,
}

/// Log in with a user's password: sets the session cookie and answers the session's CSRF
/// token, which every mutating call of the session must send as `X-CSRF-Token`. Failed
/// logins are rate limited per user and address.
#[utoipa::path(
    post, operation_id = "login", path = "/api/v1/login", tag = "session", security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "corral_session=…; HttpOnly; SameSite=Strict"))),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "Wrong user or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins; try later", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: LoginBody = json_body(&body)?;
    let (id, csrf) = check_login(&state, peer, &b.user, &b.password).await?;
    let role = state.engine.user_role(&b.user)?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&state, &id))],
        Json(LoginAnswer {
            user: b.user,
            role,
            csrf,
        }),
    )
        .into_response())
}

/// Log out: ends the session of the cookie (idempotent).
#[utoipa::path(
    post, operation_id = "logout", path = "/api/v1/logout", tag = "session", security(()),
    responses((status = 204, description = "Logged out; the cookie is cleared")),
)]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    if let Some(id) = cookie(&parts, SESSION_COOKIE) {
        state.sessions.end(id);
    }
    ([(header::SET_COOKIE, clear_cookie(&state))], StatusCode::NO_CONTENT).into_response()
}

/// The caller, their role, and (for a session) its CSRF token.
#[utoipa::path(
    get, operation_id = "whoami", path = "/api/v1/whoami", tag = "session",
    responses(
        (status = 200, description = "The caller", body = Identity),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    )
)]
pub async fn whoami(caller: Caller) -> Json<Identity> {
    Json(Identity {
        who: caller.who().to_string(),
        role: caller.principal.role,
        csrf: caller.csrf().map(str::to_string),
    })
}
