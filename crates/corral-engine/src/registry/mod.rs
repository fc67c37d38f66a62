//! The VM registry: one row per VM holding its spec as the TOML document it was defined with
//! (normalised). Only definitions live here; runtime state is always derived afresh from the
//! pidfile, the process and QMP (see `state.rs`).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use corral_types::VmSpec;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::EngineError;

mod alerts;
mod auth;
mod bases;
mod jobs;
mod schedules;

pub use auth::AuditRow;
pub use bases::BaseRow;
pub use jobs::JobFailures;

const SCHEMA_VERSION: i64 = 6;

pub struct Registry {
    conn: Connection,
    path: PathBuf,
    /// The last `list` and the database state it was read at (see `stamp`): a daemon lists
    /// every VM on each API call, and parsing each stored spec again was most of that cost.
    list_cache: RefCell<Option<(Stamp, Arc<[VmRecord]>)>>,
}

/// Where the database stands: SQLite's `data_version` (changes when any *other* connection,
/// in this or another process, commits) and this connection's own count of changed rows. While
/// both stay the same, nothing in the database changed, so what was read from it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    data_version: i64,
    own_changes: u64,
}

/// A stored VM definition.
#[derive(Debug, Clone)]
pub struct VmRecord {
    pub spec: VmSpec,
    /// Bumped on every change; `edit` uses it to refuse a stale update.
    pub generation: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Registry {
    pub fn open(path: &Path) -> Result<Registry, EngineError> {
        let db = |source| EngineError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(EngineError::Tool {
                what: format!("registry database {}", path.display()),
                message: format!(
                    "it has schema version {version}, newer than this corral knows ({SCHEMA_VERSION}); upgrade corral"
                ),
            });
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS vms (
                     name TEXT PRIMARY KEY,
                     uuid TEXT NOT NULL UNIQUE,
                     spec TEXT NOT NULL,
                     generation INTEGER NOT NULL DEFAULT 1,
                     created_at INTEGER NOT NULL,
                     updated_at INTEGER NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        if version < 2 {
            // qcow2 keeps no description with an internal snapshot: corral keeps it here.
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS snapshot_notes (
                     vm TEXT NOT NULL,
                     name TEXT NOT NULL,
                     description TEXT NOT NULL,
                     PRIMARY KEY (vm, name)
                 );
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        if version < 3 {
            // Jobs (progress readable by every process) and frozen base images with the VMs
            // that stand on them (what makes `vm delete` of a linked clone's source refuse).
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS jobs (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     vm TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     target TEXT NOT NULL,
                     state TEXT NOT NULL,
                     done INTEGER NOT NULL DEFAULT 0,
                     total INTEGER NOT NULL DEFAULT 0,
                     started_ms INTEGER NOT NULL,
                     finished_ms INTEGER,
                     message TEXT,
                     pid INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS jobs_by_vm ON jobs (vm, id);
                 CREATE TABLE IF NOT EXISTS bases (
                     path TEXT PRIMARY KEY,
                     owner TEXT NOT NULL,
                     disk TEXT NOT NULL,
                     snapshot TEXT,
                     created INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS base_users (
                     base TEXT NOT NULL REFERENCES bases (path) ON DELETE CASCADE,
                     vm TEXT NOT NULL,
                     PRIMARY KEY (base, vm)
                 );
                 PRAGMA user_version = 3;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        if version < 4 {
            // The daemon's users (argon2id hashes), API tokens (only a hash of each) and the
            // audit log of mutating calls.
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS users (
                     name TEXT PRIMARY KEY,
                     role TEXT NOT NULL,
                     password_hash TEXT NOT NULL,
                     created INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS tokens (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     hash TEXT NOT NULL UNIQUE,
                     role TEXT NOT NULL,
                     label TEXT NOT NULL,
                     created INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS audit (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     time_ms INTEGER NOT NULL,
                     who TEXT NOT NULL,
                     action TEXT NOT NULL,
                     target TEXT NOT NULL,
                     result TEXT NOT NULL
                 );
                 PRAGMA user_version = 4;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        if version < 5 {
            // Runs of scheduled jobs: what the dashboard shows, and what tells the scheduler
            // after downtime whether a run was missed (see `schedule/`).
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS schedule_runs (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     schedule TEXT NOT NULL,
                     action TEXT NOT NULL,
                     slot_ms INTEGER,
                     started_ms INTEGER NOT NULL,
                     finished_ms INTEGER,
                     outcome TEXT NOT NULL,
                     caught_up INTEGER NOT NULL DEFAULT 0,
                     manual INTEGER NOT NULL DEFAULT 0,
                     message TEXT,
                     targets TEXT NOT NULL DEFAULT '[]',
                     pid INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS schedule_runs_by_name ON schedule_runs (schedule, id);
                 PRAGMA user_version = 5;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        if version < 6 {
            // Alerts (see `alerts/`): every one that fired, open or resolved, with the outcome
            // of each notification (a JSON list, like a schedule run's targets).
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS alerts (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     rule TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     vm TEXT,
                     metric TEXT,
                     severity TEXT NOT NULL,
                     comparison TEXT,
                     value REAL,
                     threshold REAL,
                     unit TEXT,
                     summary TEXT NOT NULL,
                     job_id INTEGER,
                     since_ms INTEGER NOT NULL,
                     fired_ms INTEGER NOT NULL,
                     resolved_ms INTEGER,
                     resolved_note TEXT,
                     last_notified_ms INTEGER,
                     notifications TEXT NOT NULL DEFAULT '[]'
                 );
                 CREATE INDEX IF NOT EXISTS alerts_open ON alerts (resolved_ms);
                 PRAGMA user_version = 6;
                 COMMIT;",
            )
            .map_err(db)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        Ok(Registry {
            conn,
            path: path.to_path_buf(),
            list_cache: RefCell::new(None),
        })
    }

    /// The database's state now, or `None` inside a transaction (whose reads may yet be rolled
    /// back, so nothing read in it may be kept).
    pub(crate) fn stamp(&self) -> Result<Option<Stamp>, EngineError> {
        if !self.conn.is_autocommit() {
            return Ok(None);
        }
        let data_version = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(self.db())?;
        Ok(Some(Stamp {
            data_version,
            own_changes: self.conn.total_changes(),
        }))
    }

    /// The description a snapshot was taken with, if any.
    pub fn snapshot_note(&self, vm: &str, name: &str) -> Result<Option<String>, EngineError> {
        self.conn
            .query_row(
                "SELECT description FROM snapshot_notes WHERE vm = ?1 AND name = ?2",
                params![vm, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db())
    }

    pub fn set_snapshot_note(&self, vm: &str, name: &str, description: Option<&str>) -> Result<(), EngineError> {
        match description {
            Some(d) => self.conn.execute(
                "INSERT INTO snapshot_notes (vm, name, description) VALUES (?1, ?2, ?3)
                 ON CONFLICT (vm, name) DO UPDATE SET description = excluded.description",
                params![vm, name, d],
            ),
            None => self.conn.execute(
                "DELETE FROM snapshot_notes WHERE vm = ?1 AND name = ?2",
                params![vm, name],
            ),
        }
        .map_err(self.db())?;
        Ok(())
    }

    pub(super) fn db(&self) -> impl FnOnce(rusqlite::Error) -> EngineError + '_ {
        move |source| EngineError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn row_to_record(
        &self,
        spec: String,
        generation: i64,
        created: i64,
        updated: i64,
    ) -> Result<VmRecord, EngineError> {
        let spec = VmSpec::from_toml(&spec).map_err(|e| EngineError::Tool {
            what: format!("registry database {}", self.path.display()),
            message: format!("a stored spec no longer parses ({e}); it was changed outside corral"),
        })?;
        Ok(VmRecord {
            spec,
            generation,
            created_at: created,
            updated_at: updated,
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<VmRecord>, EngineError> {
        let row = self
            .conn
            .query_row(
                "SELECT spec, generation, created_at, updated_at FROM vms WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.db())?;
        row.map(|(s, g, c, u)| self.row_to_record(s, g, c, u)).transpose()
    }

    pub fn require(&self, name: &str) -> Result<VmRecord, EngineError> {
        self.get(name)?.ok_or_else(|| EngineError::NotFound(name.to_string()))
    }

    /// All VMs, ordered by name.
    pub fn list(&self) -> Result<Vec<VmRecord>, EngineError> {
        Ok(self.list_shared()?.to_vec())
    }

    /// All VMs, ordered by name, shared: read and parsed again only when the database
    /// changed since the last call (any write by this connection or a commit by another).
    pub fn list_shared(&self) -> Result<Arc<[VmRecord]>, EngineError> {
        let stamp = self.stamp()?;
        if let (Some(now), Some((then, records))) = (stamp, &*self.list_cache.borrow()) {
            if now == *then {
                return Ok(records.clone());
            }
        }
        let records: Arc<[VmRecord]> = self.list_uncached()?.into();
        if let Some(now) = stamp {
            *self.list_cache.borrow_mut() = Some((now, records.clone()));
        }
        Ok(records)
    }

    fn list_uncached(&self) -> Result<Vec<VmRecord>, EngineError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT spec, generation, created_at, updated_at FROM vms ORDER BY name")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(self.db())?
            .collect::<Result<Vec<(String, i64, i64, i64)>, _>>()
            .map_err(self.db())?;
        rows.into_iter()
            .map(|(s, g, c, u)| self.row_to_record(s, g, c, u))
            .collect()
    }

    /// Inserts a new VM; a taken name is `Exists`.
    pub fn insert(&self, spec: &VmSpec) -> Result<(), EngineError> {
        let uuid = spec.uuid.map(|u| u.to_string()).unwrap_or_default();
        let t = now();
        match self.conn.execute(
            "INSERT INTO vms (name, uuid, spec, generation, created_at, updated_at) VALUES (?1, ?2, ?3, 1, ?4, ?4)",
            params![spec.name.as_str(), uuid, spec.to_toml(), t],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(EngineError::Exists(spec.name.to_string()))
            }
            Err(e) => Err(self.db()(e)),
        }
    }

    /// Replaces a VM's spec if it is still at `generation` (optimistic concurrency).
    pub fn update(&self, spec: &VmSpec, generation: i64) -> Result<i64, EngineError> {
        let n = self
            .conn
            .execute(
                "UPDATE vms SET spec = ?1, generation = generation + 1, updated_at = ?2 WHERE name = ?3 AND generation = ?4",
                params![spec.to_toml(), now(), spec.name.as_str(), generation],
            )
            .map_err(self.db())?;
        if n == 0 {
            let current = self.get(spec.name.as_str())?.map(|r| r.generation);
            return Err(match current {
                Some(current) => EngineError::Stale {
                    name: spec.name.to_string(),
                    expected: generation,
                    current,
                },
                None => EngineError::NotFound(spec.name.to_string()),
            });
        }
        Ok(generation + 1)
    }

    /// Runs `f` in one SQLite transaction: all of its writes happen, or none.
    pub fn atomically<T>(&self, f: impl FnOnce(&Registry) -> Result<T, EngineError>) -> Result<T, EngineError> {
        let tx = self.conn.unchecked_transaction().map_err(self.db())?;
        let value = f(self)?; // dropping `tx` on an error rolls back
        tx.commit().map_err(self.db())?;
        Ok(value)
    }

    pub fn delete(&self, name: &str) -> Result<(), EngineError> {
        self.conn
            .execute("DELETE FROM vms WHERE name = ?1", params![name])
            .map_err(self.db())?;
        self.conn
            .execute("DELETE FROM snapshot_notes WHERE vm = ?1", params![name])
            .map_err(self.db())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> VmSpec {
        let mut s = VmSpec::from_toml(&format!("name = \"{name}\"\n[[disks]]\nsize = \"1G\"\n")).unwrap();
        s.uuid = Some(uuid::Uuid::new_v4());
        s
    }

    #[test]
    fn insert_get_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("c.db")).unwrap();
        reg.insert(&spec("b")).unwrap();
        reg.insert(&spec("a")).unwrap();
        assert!(matches!(reg.insert(&spec("a")), Err(EngineError::Exists(n)) if n == "a"));
        let names: Vec<String> = reg.list().unwrap().iter().map(|r| r.spec.name.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        let mut rec = reg.require("a").unwrap();
        rec.spec.cpus = 4;
        let g = reg.update(&rec.spec, rec.generation).unwrap();
        assert_eq!(reg.require("a").unwrap().spec.cpus, 4);
        // A stale generation is refused and changes nothing.
        rec.spec.cpus = 8;
        assert!(reg.update(&rec.spec, rec.generation).is_err());
        assert_eq!(reg.require("a").unwrap().spec.cpus, 4);
        assert_eq!(reg.require("a").unwrap().generation, g);
        reg.delete("a").unwrap();
        assert!(matches!(reg.require("a"), Err(EngineError::NotFound(_))));
    }

    #[test]
    fn schema_1_database_upgrades_and_keeps_vms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        let old = Connection::open(&p).unwrap();
        old.execute_batch(
            "CREATE TABLE vms (name TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, spec TEXT NOT NULL,
                 generation INTEGER NOT NULL DEFAULT 1, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        old.execute(
            "INSERT INTO vms VALUES ('v1', 'u1', ?1, 1, 0, 0)",
            params![spec("v1").to_toml()],
        )
        .unwrap();
        drop(old);
        let reg = Registry::open(&p).unwrap();
        assert_eq!(reg.list().unwrap().len(), 1);
        reg.set_snapshot_note("v1", "s", Some("note")).unwrap();
        assert_eq!(reg.snapshot_note("v1", "s").unwrap().as_deref(), Some("note"));
        reg.delete("v1").unwrap();
        assert_eq!(reg.snapshot_note("v1", "s").unwrap(), None, "notes go with their VM");
    }

    #[test]
    fn cached_list_sees_every_change_from_this_connection_or_another() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        let reg = Registry::open(&p).unwrap();
        let other = Registry::open(&p).unwrap(); // as another corral process would
        let cpus = |reg: &Registry| -> Vec<(String, u32)> {
            reg.list_shared()
                .unwrap()
                .iter()
                .map(|r| (r.spec.name.to_string(), r.spec.cpus))
                .collect()
        };
        reg.insert(&spec("a")).unwrap();
        assert_eq!(cpus(&reg), [("a".into(), 1)]);
        let first = reg.list_shared().unwrap();
        assert!(
            Arc::ptr_eq(&first, &reg.list_shared().unwrap()),
            "unchanged: not read again"
        );

        // Our own writes.
        let mut a = reg.require("a").unwrap();
        a.spec.cpus = 4;
        reg.update(&a.spec, a.generation).unwrap();
        assert_eq!(cpus(&reg), [("a".into(), 4)]);
        // Another connection's.
        other.insert(&spec("b")).unwrap();
        assert_eq!(cpus(&reg), [("a".into(), 4), ("b".into(), 1)]);
        let mut b = other.require("b").unwrap();
        b.spec.cpus = 2;
        other.update(&b.spec, b.generation).unwrap();
        assert_eq!(cpus(&reg), [("a".into(), 4), ("b".into(), 2)]);
        other.delete("a").unwrap();
        assert_eq!(cpus(&reg), [("b".into(), 2)]);
        // A VM deleted and defined again under the same name (same generation) is new too.
        other.delete("b").unwrap();
        other.insert(&spec("b")).unwrap();
        assert_eq!(cpus(&reg), [("b".into(), 1)]);

        // What a rolled-back transaction listed is not kept.
        let r: Result<(), EngineError> = reg.atomically(|r| {
            r.insert(&spec("c"))?;
            assert_eq!(r.list_shared()?.len(), 2);
            Err(EngineError::NotFound("rollback".into()))
        });
        assert!(r.is_err());
        assert_eq!(cpus(&reg), [("b".into(), 1)]);
        assert_eq!(reg.list().unwrap().len(), 1);
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        Registry::open(&p).unwrap().insert(&spec("x")).unwrap();
        assert_eq!(Registry::open(&p).unwrap().list().unwrap().len(), 1);
    }
}
