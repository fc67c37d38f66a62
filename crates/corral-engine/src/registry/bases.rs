//! Frozen base images and the VMs whose chains stand on them.

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::Registry;
use crate::error::EngineError;

/// A read-only image that linked clones (and possibly its owner) stand on.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseRow {
    pub path: PathBuf,
    /// The VM whose directory holds the file.
    pub owner: String,
    pub disk: String,
    pub snapshot: Option<String>,
    pub created: i64,
    pub users: Vec<String>,
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Registry {
    pub fn base_insert(&self, path: &Path, owner: &str, disk: &str, snapshot: Option<&str>) -> Result<(), EngineError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO bases (path, owner, disk, snapshot, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p(path), owner, disk, snapshot, super::now()],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn base_delete(&self, path: &Path) -> Result<(), EngineError> {
        self.conn
            .execute("DELETE FROM bases WHERE path = ?1", [p(path)])
            .map_err(self.db())?;
        Ok(())
    }

    pub fn base_add_user(&self, path: &Path, vm: &str) -> Result<(), EngineError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO base_users (base, vm) VALUES (?1, ?2)",
                params![p(path), vm],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn base_remove_user(&self, path: &Path, vm: &str) -> Result<(), EngineError> {
        self.conn
            .execute(
                "DELETE FROM base_users WHERE base = ?1 AND vm = ?2",
                params![p(path), vm],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// Forgets every base use by `vm` (the VM is being deleted).
    pub fn base_forget_vm(&self, vm: &str) -> Result<(), EngineError> {
        self.conn
            .execute("DELETE FROM base_users WHERE vm = ?1", [vm])
            .map_err(self.db())?;
        self.conn
            .execute("DELETE FROM bases WHERE owner = ?1", [vm])
            .map_err(self.db())?;
        Ok(())
    }

    pub fn base(&self, path: &Path) -> Result<Option<BaseRow>, EngineError> {
        let row = self
            .conn
            .query_row(
                "SELECT path, owner, disk, snapshot, created FROM bases WHERE path = ?1",
                [p(path)],
                |r| {
                    Ok(BaseRow {
                        path: PathBuf::from(r.get::<_, String>(0)?),
                        owner: r.get(1)?,
                        disk: r.get(2)?,
                        snapshot: r.get(3)?,
                        created: r.get(4)?,
                        users: vec![],
                    })
                },
            )
            .optional()
            .map_err(self.db())?;
        match row {
            Some(mut b) => {
                b.users = self.base_users(&b.path)?;
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }

    fn base_users(&self, path: &Path) -> Result<Vec<String>, EngineError> {
        let mut stmt = self
            .conn
            .prepare("SELECT vm FROM base_users WHERE base = ?1 ORDER BY vm")
            .map_err(self.db())?;
        let rows = stmt.query_map([p(path)], |r| r.get(0)).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// All bases, oldest first, with their users.
    pub fn bases(&self) -> Result<Vec<BaseRow>, EngineError> {
        let paths: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT path FROM bases ORDER BY created, path")
                .map_err(self.db())?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(self.db())?;
            rows.collect::<Result<_, _>>().map_err(self.db())?
        };
        let mut out = vec![];
        for path in paths {
            if let Some(b) = self.base(Path::new(&path))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Linked clones standing on bases owned by `vm` (users other than `vm` itself).
    pub fn clones_of(&self, vm: &str) -> Result<Vec<String>, EngineError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT u.vm FROM base_users u JOIN bases b ON b.path = u.base
                 WHERE b.owner = ?1 AND u.vm <> ?1 AND u.vm IN (SELECT name FROM vms) ORDER BY u.vm",
            )
            .map_err(self.db())?;
        let rows = stmt.query_map([vm], |r| r.get(0)).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}
