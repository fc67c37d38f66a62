//! Who is calling: a bearer token (scripts, the CLI's `--remote`) or a login session (the
//! web page). Sessions live in the daemon's memory: a restart logs everybody out, and no
//! session secret is ever written to disk.
//!
//! A session is a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie (`Secure` under
//! TLS). Every mutating call made with a session must also carry the session's CSRF token, in
//! the `X-CSRF-Token` header (the page's scripts) or a form's `csrf` field. Failed logins are
//! rate limited per user name and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use corral_engine::engine::auth::Principal;
use corral_types::Role;

use crate::error::ApiError;
use crate::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "corral_session";
/// The header that carries the CSRF token of a session's mutating calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Sent with every mutating call of this session.
    pub csrf: String,
    last_used: Instant,
}

/// The daemon's sessions, by the BLAKE3 hash of their id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key(id: &str) -> String {
    blake3::hash(id.as_bytes()).to_hex().to_string()
}

impl Sessions {
    /// Starts a session for `user`: its id (for the cookie) and the session.
    pub fn create(&self, user: &str) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            user: user.to_string(),
            csrf: random_hex(),
            last_used: Instant::now(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session of a cookie value (and marks it used).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(id);
        match map.get_mut(&k) {
            Some(s) if s.last_used.elapsed() < SESSION_IDLE => {
                s.last_used = Instant::now();
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&key(id));
    }
}

/// After this many failed logins in [`LIMIT_WINDOW`] for one user name or one address,
/// logins from there wait, doubling the wait with each further failure (up to 15 minutes).
pub const LIMIT_FREE_FAILURES: u32 = 5;
pub const LIMIT_WINDOW: Duration = Duration::from_secs(15 * 60);
const LIMIT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    fn keys(user: &str, ip: Option<IpAddr>) -> Vec<String> {
        let mut k = vec![format!("user:{user}")];
        if let Some(ip) = ip {
            k.push(format!("ip:{ip}"));
        }
        k
    }

    /// How long a login for `user` from `ip` must still wait (`None`: it may try now).
    pub fn wait(&self, user: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(user, ip)
            .iter()
            .filter_map(|k| map.get(k))
            .filter_map(|&(n, last)| {
                if n < LIMIT_FREE_FAILURES || last.elapsed() >= LIMIT_WINDOW {
                    return None;
                }
                let wait = Duration::from_secs(1u64 << (n - LIMIT_FREE_FAILURES).min(10)).min(LIMIT_MAX_WAIT);
                wait.checked_sub(last.elapsed())
            })
            .max()
    }

    pub fn failed(&self, user: &str, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, last)| last.elapsed() < LIMIT_WINDOW);
        for k in Self::keys(user, ip) {
            let e = map.entry(k).or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("user:{user}"));
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    Token,
    /// A session: its CSRF token, and whether this request carried it (in the header).
    Session {
        csrf: String,
        csrf_ok: bool,
    },
}

/// The authenticated caller. As an extractor it refuses (401) a request without valid
/// credentials and (403) a mutating session call whose `X-CSRF-Token` header is missing or
/// wrong; web forms, which send the token as a field, use [`MaybeCaller`] and
/// [`Caller::check_form_csrf`] instead.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Credential,
}

impl Caller {
    /// Refuses (403) a caller below `role`.
    pub fn require(&self, role: Role, what: &str) -> Result<(), ApiError> {
        if self.principal.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{what} needs the {role} role; {} is a {}",
                    self.principal.who, self.principal.role
                ),
            ))
        }
    }

    pub fn who(&self) -> &str {
        &self.principal.who
    }

    /// For a form post: the form's `csrf` field must be the session's token.
    pub fn check_form_csrf(&self, field: Option<&str>) -> Result<(), ApiError> {
        match &self.credential {
            Credential::Token => Ok(()),
            Credential::Session { csrf, .. } if field.is_some_and(|f| constant_eq(f, csrf)) => Ok(()),
            Credential::Session { .. } => Err(csrf_refused()),
        }
    }

    pub fn csrf(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf, .. } => Some(csrf),
            Credential::Token => None,
        }
    }
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "this call came with a login session but without its CSRF token: reload the page and try again",
    )
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of a cookie in the request's `Cookie` headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The caller if there are credentials; `Ok(None)` without any (the web page then shows
/// the login form instead of an error). Bad credentials are still an error.
pub struct MaybeCaller(pub Option<Caller>);

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        return match state.engine.token_check(token.trim())? {
            Some(p) => Ok(Some(Caller {
                principal: p,
                credential: Credential::Token,
            })),
            None => Err(unauthorized("unknown or revoked token")),
        };
    }
    let Some(id) = cookie(parts, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.sessions.get(id) else {
        return Ok(None);
    };
    // The role now, not at login: a deleted or demoted user loses their rights at once.
    let Some(role) = state.engine.user_role(&session.user)? else {
        state.sessions.end(id);
        return Ok(None);
    };
    let csrf_ok = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| constant_eq(v, &session.csrf));
    Ok(Some(Caller {
        principal: Principal {
            who: format!("user {}", session.user),
            role,
        },
        credential: Credential::Session {
            csrf: session.csrf,
            csrf_ok,
        },
    }))
}

/// The client's address, when the server knows it (for login rate limits).
pub struct Peer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

fn mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<MaybeCaller, ApiError> {
        Ok(MaybeCaller(authenticate(parts, state).await?))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let caller = authenticate(parts, state).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no credentials: send `Authorization: Bearer TOKEN` (`corral token create`) or log in",
            )
        })?;
        if let Credential::Session { csrf_ok: false, .. } = caller.credential {
            if mutating(&parts.method) {
                return Err(csrf_refused());
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_waits_after_free_failures_and_doubles() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..LIMIT_FREE_FAILURES - 1 {
            l.failed("ann", Some(ip));
            assert_eq!(l.wait("ann", Some(ip)), None);
        }
        l.failed("ann", Some(ip));
        let w1 = l.wait("ann", None).expect("a wait after the free failures");
        assert!(w1 <= Duration::from_secs(1), "{w1:?}");
        // The address is limited too, for another user name.
        assert!(l.wait("bob", Some(ip)).is_some());
        assert!(l.wait("bob", Some("10.0.0.2".parse().unwrap())).is_none());
        l.failed("ann", Some(ip));
        let w2 = l.wait("ann", None).unwrap();
        assert!(w2 > Duration::from_secs(1) && w2 <= Duration::from_secs(2), "{w2:?}");
        l.succeeded("ann");
        assert_eq!(l.wait("ann", None), None);
    }

    #[test]
    fn sessions_are_found_by_id_only_and_end() {
        let s = Sessions::default();
        let (id, sess) = s.create("ann");
        assert_eq!(id.len(), 64);
        assert_eq!(s.get(&id).unwrap().user, "ann");
        assert_eq!(s.get(&id).unwrap().csrf, sess.csrf);
        assert!(s.get(&sess.csrf).is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn constant_eq_compares() {
        assert!(constant_eq("abc", "abc"));
        assert!(!constant_eq("abc", "abd"));
        assert!(!constant_eq("abc", "ab"));
    }
}
