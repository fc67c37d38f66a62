//! Defining, editing and deleting VMs.
//!
//! Order of work, so that bad input changes nothing on disk: parse and validate the spec,
//! check every file it names, and only then create disks and the registry row. If anything
//! fails after a disk was created, the disks created by this call are removed again.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_types::{
    Accel, BootFrom, BootSpec, ByteSize, DiskFormat, DiskSpec, DisplayMode, MacAddr, NetworkMode, RunState, SpecError,
    VmName, VmSpec,
};
use serde::Serialize;

use super::state::{clear_runtime, observe};
use super::Engine;
use crate::error::EngineError;
use crate::paths::{ensure_dir, VmPaths};
use crate::process::find_binary;

/// What `corral vm create` takes; anything left `None` comes from the host defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: String,
    pub cpus: Option<u32>,
    pub memory: Option<ByteSize>,
    pub disks: Vec<ByteSize>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cdrom: Option<PathBuf>,
    pub cdrom_once: bool,
    pub tags: Vec<String>,
    pub accel: Option<Accel>,
    pub display: Option<DisplayMode>,
    pub network: Option<NetworkMode>,
    pub autostart: bool,
    pub guest_agent: bool,
    pub balloon: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteReport {
    pub name: String,
    /// Disk images removed (only ones corral created in the VM's directory).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub removed: Vec<PathBuf>,
    /// Disk images left in place (external images, or all with `--keep-disks`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub kept: Vec<PathBuf>,
    pub discarded_saved_state: bool,
}

/// Makes relative paths in a spec absolute against `base` (the spec file's directory).
pub fn absolutize(spec: &mut VmSpec, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    spec.boot.kernel.as_mut().map(fix);
    spec.boot.initrd.as_mut().map(fix);
    spec.cdrom.as_mut().map(fix);
    for d in &mut spec.disks {
        d.path.as_mut().map(fix);
    }
}

fn must_exist(what: &str, p: &Path, hint: &str) -> Result<(), EngineError> {
    // is_file follows symlinks: a link to an image counts, a link to a directory does not.
    if p.is_file() {
        return Ok(());
    }
    Err(EngineError::MissingFile {
        what: what.to_string(),
        path: p.to_path_buf(),
        hint: hint.to_string(),
    })
}

/// Checks every file a spec needs at start (disks must exist by then).
pub(crate) fn check_files(spec: &VmSpec, paths: &VmPaths, disks_created: bool) -> Result<(), EngineError> {
    if let Some(k) = &spec.boot.kernel {
        must_exist("kernel", k, "fix boot.kernel in the spec")?;
    }
    if let Some(i) = &spec.boot.initrd {
        must_exist("initrd", i, "fix boot.initrd in the spec")?;
    }
    if let Some(c) = &spec.cdrom {
        must_exist("CD-ROM image", c, "fix `cdrom` in the spec, or eject it")?;
    }
    for (i, d) in spec.disks.iter().enumerate() {
        let path = d.path.clone().unwrap_or_else(|| paths.disk(&d.name));
        if d.size.is_some() && !disks_created {
            continue; // created by define
        }
        must_exist(
            &format!("disk {} (disks[{i}])", d.name),
            &path,
            "give the path of an existing image, or a `size` to have corral create one",
        )?;
    }
    Ok(())
}

/// Creates a qcow2 image with qemu-img.
pub(crate) fn create_qcow2(img: &str, path: &Path, size: ByteSize) -> Result<(), EngineError> {
    let bin = find_binary(img).map_err(|_| EngineError::QemuMissing {
        binary: img.to_string(),
        where_: " in $PATH".into(),
    })?;
    let out = Command::new(bin)
        .args(["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on"])
        .arg(path)
        .arg(size.0.to_string())
        .output()
        .map_err(EngineError::io(path))?;
    if !out.status.success() {
        return Err(EngineError::Tool {
            what: format!("qemu-img create {}", path.display()),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Which keys a spec document set itself; the others take the host defaults.
pub(crate) enum Given<'a> {
    /// A complete spec (an edit, a clone, a restore): nothing is defaulted.
    All,
    Toml(&'a toml::Table),
    Json(&'a serde_json::Map<String, serde_json::Value>),
}

impl Given<'_> {
    /// Whether the document set `key` (at the top, or in `table`).
    fn has(&self, table: Option<&str>, key: &str) -> bool {
        match (self, table) {
            (Given::All, _) => true,
            (Given::Toml(t), None) => t.contains_key(key),
            (Given::Toml(t), Some(tb)) => t
                .get(tb)
                .and_then(|v| v.as_table())
                .is_some_and(|t| t.contains_key(key)),
            (Given::Json(m), None) => m.get(key).is_some_and(|v| !v.is_null()),
            (Given::Json(m), Some(tb)) => m
                .get(tb)
                .and_then(|v| v.as_object())
                .is_some_and(|t| t.get(key).is_some_and(|v| !v.is_null())),
        }
    }
}

/// A spec from JSON (the REST API): unknown fields refused, errors with the field's path
/// (`disks[0].sise: unknown field …`).
fn spec_from_json(doc: &serde_json::Value) -> Result<VmSpec, EngineError> {
    let spec: VmSpec = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        SpecError::Parse(if path == "." { inner } else { format!("{path}: {inner}") })
    })?;
    spec.validate()?;
    Ok(spec)
}

/// Relative paths make no sense without a spec file to be relative to.
fn refuse_relative(name: &str, op: &str, spec: &VmSpec) -> Result<(), EngineError> {
    let relative: Vec<String> = [
        spec.boot.kernel.as_ref(),
        spec.boot.initrd.as_ref(),
        spec.cdrom.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(spec.disks.iter().filter_map(|d| d.path.as_ref()))
    .filter(|p| p.is_relative())
    .map(|p| p.display().to_string())
    .collect();
    if relative.is_empty() {
        return Ok(());
    }
    Err(EngineError::invalid(
        name,
        op,
        format!("paths must be absolute here: {}", relative.join(", ")),
    ))
}

impl Engine {
    /// Fills in what the host decides: generated ids and disk names, host defaults for keys
    /// the spec document did not set.
    pub(crate) fn normalize(&self, spec: &mut VmSpec, given: Given<'_>) {
        let d = &self.cfg.defaults;
        if !given.has(None, "cpus") {
            spec.cpus = d.cpus;
        }
        if !given.has(None, "memory") {
            spec.memory = d.memory;
        }
        if !given.has(Some("display"), "mode") {
            spec.display.mode = d.display;
        }
        if !given.has(Some("network"), "mode") {
            spec.network.mode = d.network;
        }
        if spec.uuid.is_none() {
            spec.uuid = Some(uuid::Uuid::new_v4());
        }
        if spec.network.mode == NetworkMode::User && spec.network.mac.is_none() {
            spec.network.mac = Some(MacAddr::generate());
        }
        let mut n = 0;
        let taken: Vec<String> = spec.disks.iter().map(|d| d.name.clone()).collect();
        for disk in &mut spec.disks {
            if disk.name.is_empty() {
                while taken.contains(&format!("disk{n}")) {
                    n += 1;
                }
                disk.name = format!("disk{n}");
                n += 1;
            }
        }
    }

    /// Defines a VM from a spec document. `base` resolves relative paths in it.
    pub fn define_toml(&self, text: &str, base: Option<&Path>) -> Result<VmSpec, EngineError> {
        let mut spec = VmSpec::from_toml(text)?;
        let raw: toml::Table =
            toml::from_str(text).map_err(|e| corral_types::SpecError::Parse(e.message().to_string()))?;
        if let Some(b) = base {
            absolutize(&mut spec, b);
        }
        self.normalize(&mut spec, Given::Toml(&raw));
        self.define(spec)
    }

    /// Defines a VM from a spec as a JSON document (the REST API): the same checks and host
    /// defaults as [`Engine::define_toml`]; paths must be absolute.
    pub fn define_json(&self, doc: &serde_json::Value) -> Result<VmSpec, EngineError> {
        let mut spec = spec_from_json(doc)?;
        refuse_relative(spec.name.as_str(), "define", &spec)?;
        let keys = doc.as_object().cloned().unwrap_or_default();
        self.normalize(&mut spec, Given::Json(&keys));
        self.define(spec)
    }

    /// Builds a spec from `corral vm create` options and defines it.
    pub fn create(&self, o: CreateOptions) -> Result<VmSpec, EngineError> {
        let name = VmName::new(&o.name)?;
        let d = &self.cfg.defaults;
        let mut spec = VmSpec::new(name);
        spec.cpus = o.cpus.unwrap_or(d.cpus);
        spec.memory = o.memory.unwrap_or(d.memory);
        spec.accel = o.accel.unwrap_or_default();
        spec.tags = o.tags;
        spec.autostart = o.autostart;
        spec.guest_agent = o.guest_agent;
        spec.balloon = o.balloon;
        spec.display.mode = o.display.unwrap_or(d.display);
        spec.network.mode = o.network.unwrap_or(d.network);
        spec.cdrom = o.cdrom;
        spec.disks = o
            .disks
            .into_iter()
            .map(|size| DiskSpec {
                name: String::new(),
                path: None,
                size: Some(size),
                format: DiskFormat::Qcow2,
                role: Default::default(),
                bus: Default::default(),
            })
            .collect();
        spec.boot = BootSpec {
            from: if o.cdrom_once {
                BootFrom::CdromOnce
            } else {
                BootFrom::Auto
            },
            kernel: o.kernel,
            initrd: o.initrd,
            cmdline: o.cmdline,
        };
        spec.validate()?;
        self.normalize(&mut spec, Given::All);
        self.define(spec)
    }

    /// Stores a validated, normalised spec, creating the disks it asks for.
    fn define(&self, mut spec: VmSpec) -> Result<VmSpec, EngineError> {
        spec.validate()?;
        // Held across the existence check, disk creation and insert, so two defines (or a
        // define racing a delete) of one name cannot remove each other's disks.
        let _lock = self.lock(&spec.name, "define")?;
        if self.reg().get(spec.name.as_str())?.is_some() {
            return Err(EngineError::Exists(spec.name.to_string()));
        }
        let paths = self.paths(&spec.name);
        check_files(&spec, &paths, false)?;
        let dir_existed = paths.data.exists();
        let mut created: Vec<PathBuf> = vec![];
        let result = (|| {
            self.create_disks(&mut spec, &paths, &mut created)?;
            self.reg().insert(&spec)
        })();
        if let Err(e) = result {
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            if !dir_existed {
                let _ = std::fs::remove_dir(&paths.data);
            }
            return Err(e);
        }
        tracing::info!(vm = %spec.name, "defined");
        Ok(spec)
    }

    /// Creates images for disks that have a size but no image yet, and records their path.
    fn create_disks(&self, spec: &mut VmSpec, paths: &VmPaths, created: &mut Vec<PathBuf>) -> Result<(), EngineError> {
        for d in &mut spec.disks {
            let Some(size) = d.size else { continue };
            let path = d.path.clone().unwrap_or_else(|| paths.disk(&d.name));
            if path.exists() {
                d.path = Some(path);
                continue;
            }
            if let Some(parent) = path.parent() {
                ensure_dir(parent, 0o700).map_err(EngineError::io(parent))?;
            }
            create_qcow2(&self.cfg.qemu.img_binary, &path, size)?;
            created.push(path.clone());
            d.path = Some(path);
        }
        Ok(())
    }

    /// Replaces a VM's spec with an edited document. `generation` guards against lost
    /// updates. Changes apply at the next cold start. Returns the new spec.
    pub fn update_toml(&self, name: &str, text: &str, generation: i64) -> Result<VmSpec, EngineError> {
        self.update(name, VmSpec::from_toml(text)?, generation)
    }

    /// [`Engine::update_toml`] with the spec as a JSON document (the REST API).
    pub fn update_json(&self, name: &str, doc: &serde_json::Value, generation: i64) -> Result<VmSpec, EngineError> {
        self.update(name, spec_from_json(doc)?, generation)
    }

    fn update(&self, name: &str, mut spec: VmSpec, generation: i64) -> Result<VmSpec, EngineError> {
        let old = self.get(name)?;
        let _lock = self.lock(&old.spec.name, "edit")?;
        if spec.name != old.spec.name {
            return Err(EngineError::invalid(name, "edit", format!(
                "the name cannot change (from {} to {}); a VM's name is its identity — clone it under the new name instead",
                old.spec.name, spec.name
            )));
        }
        if spec.uuid.is_some() && spec.uuid != old.spec.uuid {
            return Err(EngineError::invalid(
                name,
                "edit",
                "the uuid cannot change; remove the line to keep the current one",
            ));
        }
        spec.uuid = old.spec.uuid;
        refuse_relative(name, "edit", &spec)?;
        self.normalize(&mut spec, Given::All);
        let paths = self.paths(&spec.name);
        check_files(&spec, &paths, false)?;
        let mut created = vec![];
        let result = self
            .create_disks(&mut spec, &paths, &mut created)
            .and_then(|_| self.reg().update(&spec, generation));
        if let Err(e) = result {
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok(spec)
    }

    /// Deletes a stopped (or saved, or crashed) VM.
    pub async fn delete(&self, name: &str, keep_disks: bool) -> Result<DeleteReport, EngineError> {
        let (_lock, rec) = self.lock_and_get(name, "delete")?;
        let spec = rec.spec;
        let paths = self.paths(&spec.name);
        let o = observe(&spec, &paths).await;
        // A live QEMU (even one still waiting for a saved state) must be ended first.
        if o.state.is_active() || o.pid.is_some() {
            return Err(EngineError::WrongState {
                name: spec.name.to_string(),
                state: o.state,
                hint: format!(
                    "its QEMU still runs; stop it first (`corral vm stop {0}`, or `corral vm kill {0}`)",
                    spec.name
                ),
            });
        }
        let clones = self.reg().clones_of(spec.name.as_str())?;
        if !clones.is_empty() {
            return Err(EngineError::in_use(
                name,
                "delete",
                format!(
                    "{} on its base images: {}; delete {} first, or make independent copies with `corral vm clone CLONE NEW --full`",
                    super::clone::clone_count(&clones),
                    clones.join(", "),
                    if clones.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        // Every file of the disks' chains that lives in the VM's directory (overlays, frozen
        // bases, exported snapshot bases), read before the registry forgets the VM.
        let tops: Vec<PathBuf> = spec
            .disks
            .iter()
            .map(|d| d.path.clone().unwrap_or_else(|| paths.disk(&d.name)))
            .collect();
        let mut files: Vec<PathBuf> = vec![];
        for d in &spec.disks {
            let top = d.path.clone().unwrap_or_else(|| paths.disk(&d.name));
            match self.img_chain(&top) {
                Ok(chain) => files.extend(chain.into_iter().map(|l| l.filename)),
                Err(_) => files.push(top),
            }
        }
        files.extend(
            self.reg()
                .bases()?
                .into_iter()
                .filter(|b| b.owner == spec.name.as_str())
                .map(|b| b.path),
        );
        files.dedup();
        self.reg().atomically(|r| {
            r.delete(spec.name.as_str())?;
            r.base_forget_vm(spec.name.as_str())
        })?;
        let mut report = DeleteReport {
            name: spec.name.to_string(),
            removed: vec![],
            kept: vec![],
            discarded_saved_state: o.state == RunState::Saved,
        };
        for path in files {
            if report.removed.contains(&path) || report.kept.contains(&path) {
                continue;
            }
            let ours = path.starts_with(&paths.data);
            if ours && !keep_disks {
                match std::fs::remove_file(&path) {
                    Ok(()) => report.removed.push(path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => report.kept.push(path),
                }
            } else if ours || tops.contains(&path) {
                // Layers below that belong to other VMs (a linked clone's base) are theirs.
                report.kept.push(path);
            }
        }
        for p in [
            paths.saved_state(),
            paths.saved_meta(),
            paths.console_log(),
            paths.qemu_log(),
        ] {
            let _ = std::fs::remove_file(p);
        }
        clear_runtime(&paths);
        let _ = std::fs::remove_dir(&paths.run);
        let _ = std::fs::remove_dir(&paths.data); // only when empty: kept disks stay
        tracing::info!(vm = %spec.name, "deleted");
        Ok(report)
    }
}
