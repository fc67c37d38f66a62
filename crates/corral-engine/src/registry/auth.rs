//! Users, API tokens and the audit log of the daemon. Passwords and tokens are stored only
//! as hashes made by the caller (argon2id for passwords, BLAKE3 for tokens).

use rusqlite::{params, OptionalExtension};

use super::Registry;
use crate::error::EngineError;

/// A user of the web page and API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub created: i64,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub role: String,
    pub label: String,
    pub created: i64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRow {
    pub id: i64,
    pub time_ms: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

const USER_COLUMNS: &str = "name, role, password_hash, created";
const TOKEN_COLUMNS: &str = "id, role, label, created";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        role: r.get(1)?,
        password_hash: r.get(2)?,
        created: r.get(3)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        role: r.get(1)?,
        label: r.get(2)?,
        created: r.get(3)?,
    })
}

impl Registry {
    pub fn user_insert(&self, name: &str, role: &str, password_hash: &str, now: i64) -> Result<(), EngineError> {
        match self.conn.execute(
            "INSERT INTO users (name, role, password_hash, created) VALUES (?1, ?2, ?3, ?4)",
            params![name, role, password_hash, now],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(EngineError::Exists(format!("user {name}")))
            }
            Err(e) => Err((self.db())(e)),
        }
    }

    /// Sets a user's password hash (and role, when given). False if there is no such user.
    pub fn user_update(
        &self,
        name: &str,
        password_hash: Option<&str>,
        role: Option<&str>,
    ) -> Result<bool, EngineError> {
        let n = self
            .conn
            .execute(
                "UPDATE users SET password_hash = COALESCE(?2, password_hash), role = COALESCE(?3, role) WHERE name = ?1",
                params![name, password_hash, role],
            )
            .map_err(self.db())?;
        Ok(n == 1)
    }

    pub fn user_delete(&self, name: &str) -> Result<bool, EngineError> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", [name])
            .map_err(self.db())?;
        Ok(n == 1)
    }

    /// One user: looked up on every call a login session makes, so the statement is kept.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>, EngineError> {
        self.conn
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
            .and_then(|mut st| st.query_row([name], user_row).optional())
            .map_err(self.db())
    }

    pub fn users(&self) -> Result<Vec<UserRow>, EngineError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .map_err(self.db())?;
        let rows = st.query_map([], user_row).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Records a token by the hash of its secret; returns its id.
    pub fn token_insert(&self, hash: &str, role: &str, label: &str, now: i64) -> Result<i64, EngineError> {
        self.conn
            .execute(
                "INSERT INTO tokens (hash, role, label, created) VALUES (?1, ?2, ?3, ?4)",
                params![hash, role, label, now],
            )
            .map_err(self.db())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The token whose secret hashes to `hash`.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, EngineError> {
        // Cached: the daemon checks a token on every call.
        self.conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"))
            .and_then(|mut st| st.query_row([hash], token_row).optional())
            .map_err(self.db())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>, EngineError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
            .map_err(self.db())?;
        let rows = st.query_map([], token_row).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    pub fn token_delete(&self, id: i64) -> Result<bool, EngineError> {
        let n = self
            .conn
            .execute("DELETE FROM tokens WHERE id = ?1", [id])
            .map_err(self.db())?;
        Ok(n == 1)
    }

    pub fn audit_insert(
        &self,
        time_ms: i64,
        who: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> Result<(), EngineError> {
        self.conn
            .execute(
                "INSERT INTO audit (time_ms, who, action, target, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![time_ms, who, action, target, result],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// The newest audit lines first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, EngineError> {
        let mut st = self
            .conn
            .prepare("SELECT id, time_ms, who, action, target, result FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(self.db())?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    who: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: r.get(5)?,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_tokens_and_audit_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("c.db")).unwrap();
        reg.user_insert("ann", "admin", "$argon2id$x", 1).unwrap();
        assert!(matches!(
            reg.user_insert("ann", "viewer", "h", 2),
            Err(EngineError::Exists(_))
        ));
        assert!(reg.user_update("ann", Some("$argon2id$y"), None).unwrap());
        assert_eq!(reg.user("ann").unwrap().unwrap().password_hash, "$argon2id$y");
        assert!(!reg.user_update("bob", Some("h"), None).unwrap());
        let id = reg.token_insert("abc", "viewer", "ci", 3).unwrap();
        assert_eq!(reg.token_by_hash("abc").unwrap().unwrap().id, id);
        assert!(reg.token_by_hash("abd").unwrap().is_none());
        reg.audit_insert(5, "ann", "start", "web1", "ok").unwrap();
        reg.audit_insert(6, "token 1", "stop", "web1", "error: busy").unwrap();
        let a = reg.audit(10).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].action, "stop", "newest first");
        assert!(reg.token_delete(id).unwrap());
        assert!(reg.user_delete("ann").unwrap());
        assert!(reg.users().unwrap().is_empty());
    }
}
