//! `schedule_put` / `schedule_delete`: change the `[[schedule]]` tables of the config file and
//! nothing else. The file is edited as a TOML document (toml_edit), so comments, order and
//! layout stay; the result must load as a whole before it replaces the file (a temporary
//! file renamed over it), and on any error the file is left as it was.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use corral_types::ScheduleSpec;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use super::{locked, Calendar};
use crate::config::HostConfig;
use crate::engine::Engine;
use crate::error::EngineError;

/// A spec as a TOML table, keys in a fixed order, defaults left out.
fn spec_table(s: &ScheduleSpec) -> Table {
    let mut t = Table::new();
    let list = |v: &[String]| value(v.iter().map(String::as_str).collect::<Array>());
    t.insert("name", value(s.name.as_str()));
    t.insert("calendar", value(s.calendar.as_str()));
    t.insert("action", value(s.action.as_str()));
    if !s.vms.is_empty() {
        t.insert("vms", list(&s.vms));
    }
    if !s.tags.is_empty() {
        t.insert("tags", list(&s.tags));
    }
    if s.all {
        t.insert("all", value(true));
    }
    if s.full {
        t.insert("full", value(true));
    }
    if let Some(k) = s.skeleton {
        t.insert("skeleton", value(k));
    }
    for (key, v) in [
        ("keep_last", s.keep_last),
        ("keep_daily", s.keep_daily),
        ("keep_weekly", s.keep_weekly),
        ("keep_monthly", s.keep_monthly),
    ] {
        if let Some(v) = v {
            t.insert(key, value(v as i64));
        }
    }
    if !s.enabled {
        t.insert("enabled", value(false));
    }
    t
}

/// Replaces `old`'s keys by `new`'s in place: keys both have keep their position and the
/// comments around them; keys only `old` has go; new keys come last.
fn merge_into(old: &mut Table, new: Table) {
    let keep: Vec<String> = new.iter().map(|(k, _)| k.to_string()).collect();
    let gone: Vec<String> = old
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !keep.contains(k))
        .collect();
    for k in gone {
        old.remove(&k);
    }
    for (k, item) in new {
        match old.get_mut(&k) {
            Some(slot) => {
                let decor = slot.as_value().map(|v| v.decor().clone());
                *slot = item;
                if let (Some(d), Some(v)) = (decor, slot.as_value_mut()) {
                    *v.decor_mut() = d;
                }
            }
            None => {
                old.insert(&k, item);
            }
        }
    }
}

fn schedules_mut(doc: &mut DocumentMut) -> Result<Option<&mut ArrayOfTables>, String> {
    match doc.get_mut("schedule") {
        None => Ok(None),
        Some(item) => item.as_array_of_tables_mut().map(Some).ok_or_else(|| {
            "`schedule` is not written as [[schedule]] tables; rewrite it that way (docs/schedules.md) to edit \
             schedules from corral"
                .to_string()
        }),
    }
}

fn name_of(t: &Table) -> Option<&str> {
    t.get("name").and_then(Item::as_str)
}

/// The config text with `spec` added, or replacing the schedule of the same name.
pub(crate) fn put_text(text: &str, spec: &ScheduleSpec) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("it is not valid TOML: {e}"))?;
    let table = spec_table(spec);
    match schedules_mut(&mut doc)? {
        Some(list) => {
            let found = list.iter().position(|t| name_of(t) == Some(spec.name.as_str()));
            match found {
                Some(i) => merge_into(list.get_mut(i).expect("found above"), table),
                None => list.push(table),
            }
        }
        None => {
            let mut list = ArrayOfTables::new();
            list.push(table);
            doc.insert("schedule", Item::ArrayOfTables(list));
        }
    }
    Ok(doc.to_string())
}

/// The config text without the schedule `name`; `Ok(None)` when there is no such schedule.
pub(crate) fn delete_text(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("it is not valid TOML: {e}"))?;
    let Some(list) = schedules_mut(&mut doc)? else {
        return Ok(None);
    };
    let Some(i) = list.iter().position(|t| name_of(t) == Some(name)) else {
        return Ok(None);
    };
    list.remove(i);
    if list.is_empty() {
        doc.remove("schedule");
    }
    Ok(Some(doc.to_string()))
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, with
/// the old file's permissions (0644 for a new one). A symlink is followed, not replaced.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let target = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(format!("cannot resolve it: {e}")),
    };
    let mode = match std::fs::metadata(&target) {
        Ok(m) => {
            if m.permissions().readonly() {
                return Err(
                    "it is read-only; make it writable (chmod u+w) or edit the [[schedule]] tables by hand".into(),
                );
            }
            m.permissions().mode() & 0o7777
        }
        Err(_) => 0o644,
    };
    let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create its directory {}: {e}", dir.display()))?;
    }
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{file_name}.corral-{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(nix::libc::EROFS) {
            "; run corral as a user who may write it (root for /etc/corral), or set $CORRAL_CONFIG to a file you can write"
        } else {
            ""
        };
        return Err(format!("cannot write it: {e}{hint}; it was not changed"));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Engine {
    fn config_file(&self) -> Result<PathBuf, EngineError> {
        self.config().path.clone().ok_or_else(|| {
            EngineError::BadRequest(
                "this corral was started without a config file to edit; add [[schedule]] tables to the config file by hand"
                    .into(),
            )
        })
    }

    /// Edits the config file with `edit` (current text → new text), checks the result as a
    /// whole, writes it atomically and makes its schedules current.
    fn edit_schedules(&self, edit: impl FnOnce(&str) -> Result<String, EngineError>) -> Result<(), EngineError> {
        let _one_at_a_time = locked(&self.sched.edit);
        let path = self.config_file()?;
        let cfg_err = |message: String| EngineError::Config {
            path: path.clone(),
            message,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(cfg_err(format!("cannot read it: {e}"))),
        };
        HostConfig::parse(&text)
            .map_err(|m| cfg_err(format!("{m}; fix the file first, schedules were not changed")))?;
        let new_text = edit(&text)?;
        let cfg = HostConfig::parse(&new_text)
            .map_err(|m| cfg_err(format!("the change would make it invalid ({m}); it was not changed")))?;
        write_atomically(&path, &new_text).map_err(cfg_err)?;
        *locked(&self.sched.specs) = cfg.schedule;
        self.sched.changed.notify_one();
        Ok(())
    }

    /// Adds a schedule, or replaces the one with the same name, in the config file (only its
    /// `[[schedule]]` tables change; comments stay). Bad input changes nothing.
    pub fn schedule_put(&self, spec: ScheduleSpec) -> Result<(), EngineError> {
        let bad = |m: String| EngineError::BadRequest(format!("schedule {:?}: {m}", spec.name));
        spec.check().map_err(|e| bad(e.to_string()))?;
        Calendar::parse(&spec.calendar).map_err(|e| bad(format!("calendar {e}")))?;
        self.edit_schedules(|text| {
            put_text(text, &spec).map_err(|m| EngineError::Config {
                path: self.config().path.clone().unwrap_or_default(),
                message: m,
            })
        })
    }

    /// Removes a schedule from the config file (its run history stays in the registry).
    pub fn schedule_delete(&self, name: &str) -> Result<(), EngineError> {
        self.edit_schedules(|text| {
            delete_text(text, name)
                .map_err(|m| EngineError::Config {
                    path: self.config().path.clone().unwrap_or_default(),
                    message: m,
                })?
                .ok_or_else(|| EngineError::NoSuchSchedule(name.to_string()))
        })
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
