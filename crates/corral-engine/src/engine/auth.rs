//! The daemon's users, API tokens and audit log, shared with the CLI (`corral user`,
//! `corral token`, `corral audit`). Passwords are kept as argon2id hashes, tokens as the
//! BLAKE3 hash of their 256-bit secret; neither is ever stored or logged in clear.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use corral_types::Role;
use serde::Serialize;

use super::jobs::now_ms;
use super::Engine;
use crate::error::EngineError;
pub use crate::registry::AuditRow;

/// A user, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
}

/// An API token, as listed (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub role: Role,
    pub label: String,
    pub created_ms: i64,
}

/// Who is calling, once a password or token checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `user ann` or `token 3 (label)`.
    pub who: String,
    pub role: Role,
}

const TOKEN_PREFIX: &str = "corral_";

fn token_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn check_user_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "user name {name:?}: use 1-64 letters, digits and - _ . @"
        )))
    }
}

fn check_password(password: &str) -> Result<(), EngineError> {
    if password.chars().count() < 10 {
        return Err(EngineError::BadRequest(
            "the password is too short: use at least 10 characters".into(),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, EngineError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::BadRequest(format!("cannot hash the password: {e}")))
}

fn role_of(s: &str) -> Role {
    s.parse().unwrap_or(Role::Viewer)
}

impl Engine {
    pub fn user_add(&self, name: &str, role: Role, password: &str) -> Result<(), EngineError> {
        check_user_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        self.reg().user_insert(name, role.as_str(), &hash, now_ms())
    }

    pub fn user_passwd(&self, name: &str, password: &str) -> Result<(), EngineError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        if !self.reg().user_update(name, Some(&hash), None)? {
            return Err(EngineError::NotFound(format!("user {name}")));
        }
        Ok(())
    }

    pub fn user_delete(&self, name: &str) -> Result<(), EngineError> {
        if !self.reg().user_delete(name)? {
            return Err(EngineError::NotFound(format!("user {name}")));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<UserInfo>, EngineError> {
        Ok(self
            .reg()
            .users()?
            .into_iter()
            .map(|u| UserInfo {
                role: role_of(&u.role),
                name: u.name,
                created_ms: u.created,
            })
            .collect())
    }

    /// A user's current role (`None` once deleted): sessions look it up on every call, so a
    /// deleted or demoted user loses their rights at once.
    pub fn user_role(&self, name: &str) -> Result<Option<Role>, EngineError> {
        Ok(self.reg().user(name)?.map(|u| role_of(&u.role)))
    }

    /// Checks a login. A wrong password and an unknown user give the same `None` after the
    /// same work, so neither can be told apart by the answer or its timing.
    pub fn user_login(&self, name: &str, password: &str) -> Result<Option<Principal>, EngineError> {
        let user = self.reg().user(name)?;
        // A real hash (of nothing anyone knows) to verify against when the user does not
        // exist, so that case costs the same argon2 work.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| hash_password("no user has this password").unwrap_or_default());
        let stored = user.as_ref().map(|u| u.password_hash.as_str()).unwrap_or(dummy);
        let ok = PasswordHash::new(stored)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        Ok(match (ok, user) {
            (true, Some(u)) => Some(Principal {
                who: format!("user {}", u.name),
                role: role_of(&u.role),
            }),
            _ => None,
        })
    }

    /// Makes a token; returns it with its secret, which is shown this once and never stored.
    pub fn token_create(&self, role: Role, label: &str) -> Result<(TokenInfo, String), EngineError> {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let now = now_ms();
        let id = self
            .reg()
            .token_insert(&token_hash(&secret), role.as_str(), label, now)?;
        Ok((
            TokenInfo {
                id,
                role,
                label: label.to_string(),
                created_ms: now,
            },
            secret,
        ))
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, EngineError> {
        Ok(self
            .reg()
            .tokens()?
            .into_iter()
            .map(|t| TokenInfo {
                id: t.id,
                role: role_of(&t.role),
                label: t.label,
                created_ms: t.created,
            })
            .collect())
    }

    pub fn token_revoke(&self, id: i64) -> Result<(), EngineError> {
        if !self.reg().token_delete(id)? {
            return Err(EngineError::NotFound(format!("token {id}")));
        }
        Ok(())
    }

    /// The principal a bearer token stands for, if it is one of ours.
    pub fn token_check(&self, secret: &str) -> Result<Option<Principal>, EngineError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self.reg().token_by_hash(&token_hash(secret))?.map(|t| Principal {
            who: if t.label.is_empty() {
                format!("token {}", t.id)
            } else {
                format!("token {} ({})", t.id, t.label)
            },
            role: role_of(&t.role),
        }))
    }

    /// Records a mutating call: who, what, on what, and how it ended.
    pub fn audit(&self, who: &str, action: &str, target: &str, result: &str) {
        if let Err(e) = self.reg().audit_insert(now_ms(), who, action, target, result) {
            tracing::warn!("cannot write the audit log: {e}");
        }
    }

    /// The newest audit lines first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRow>, EngineError> {
        self.reg().audit(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_check_out_and_are_never_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::HostConfig::parse(&format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n",
            dir.path().display()
        ))
        .unwrap();
        let e = Engine::open(cfg).unwrap();
        e.user_add("ann", Role::Admin, "correct horse battery").unwrap();
        assert!(e.user_add("ann", Role::Viewer, "another long one").is_err());
        assert!(e.user_add("bob", Role::Viewer, "short").is_err());
        assert!(e.user_add("../x", Role::Viewer, "long enough pw").is_err());
        let p = e.user_login("ann", "correct horse battery").unwrap().unwrap();
        assert_eq!(p.role, Role::Admin);
        assert!(e.user_login("ann", "wrong password!!").unwrap().is_none());
        assert!(e.user_login("nobody", "correct horse battery").unwrap().is_none());
        let (t, secret) = e.token_create(Role::Viewer, "ci").unwrap();
        assert!(secret.starts_with("corral_") && secret.len() == 7 + 64);
        assert_eq!(e.token_check(&secret).unwrap().unwrap().role, Role::Viewer);
        assert!(e.token_check("corral_00").unwrap().is_none());
        let db = std::fs::read(dir.path().join("data/corral.db")).unwrap_or_default();
        let text = String::from_utf8_lossy(&db);
        assert!(!text.contains(&secret) && !text.contains("correct horse battery"));
        e.token_revoke(t.id).unwrap();
        assert!(e.token_check(&secret).unwrap().is_none());
    }
}
