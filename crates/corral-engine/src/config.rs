//! Host settings: `/etc/corral/corral.toml`, or the file named by `$CORRAL_CONFIG`.
//!
//! Without a config file corral runs on defaults: `/var/lib/corral` and `/run/corral` as root,
//! the XDG data and runtime dirs otherwise.

use std::path::{Path, PathBuf};

use corral_types::{
    Accel, AlertRuleSpec, AlertsSettings, ByteSize, DisplayMode, HumanDuration, NetworkMode, NotifyConfig, Percent,
    ScheduleSpec,
};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

pub const DEFAULT_CONFIG: &str = "/etc/corral/corral.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// VM registry (SQLite), disks, saved states and logs.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Sockets, pidfiles and locks: per boot, tmpfs in the usual setup.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    #[serde(default)]
    pub qemu: QemuConfig,
    /// Values for new VMs that do not say otherwise (`corral vm create`, or a spec without them).
    #[serde(default)]
    pub defaults: VmDefaults,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub disk: DiskConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    /// The daemon's sampling of resource use and the history it keeps (docs/metrics.md).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Scheduled jobs (`[[schedule]]`, docs/schedules.md), as loaded. The engine keeps the
    /// current list (`Engine::schedule_specs`), which `schedule_put`/`schedule_delete` change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleSpec>,
    /// Threshold alert rules (`[[alert]]`, docs/alerts.md), checked when the config loads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<AlertRuleSpec>,
    /// `[alerts]`: re-notification, the built-in rules (crash, failed and old backups), history.
    #[serde(default)]
    pub alerts: AlertsSettings,
    /// `[notify.mail]`, `[notify.webhook]`: where alerts go.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The file this was read from, or would be written to (`schedule_put` on a host
    /// running on defaults); `None` for a config parsed from text.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// Where backups go and how the store is made (the chunk size is fixed when the store is
/// created; the compression level applies to each new backup).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The store directory (default: `<data_dir>/backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// Chunk size: the dirty-bitmap granularity, a power of two from 4K to 4M.
    #[serde(default = "sixty_four_k")]
    pub chunk_size: ByteSize,
    /// zstd level for new chunks (1-22). 1 by default: on two cores level 3 costs a third
    /// more time for a store about 1% smaller on disk-image data (docs/benchmarks.md).
    #[serde(default = "zstd_fast")]
    pub zstd_level: i32,
}

/// How often `corral serve` samples resource use, and how long it keeps what it sampled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Time between two samples (and the resolution of the raw history).
    #[serde(default = "ten_seconds")]
    pub interval: HumanDuration,
    /// How long raw samples are kept.
    #[serde(default = "one_day")]
    pub raw_retention: HumanDuration,
    /// How long the 5-minute averages are kept.
    #[serde(default = "thirty_days")]
    pub average_retention: HumanDuration,
}

fn ten_seconds() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn one_day() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(86_400))
}
fn thirty_days() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 86_400))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// The overlay consolidation policy: `corral disk consolidate` merges an overlay (the active
/// layer above a base) once it passes either limit, and `corral disk info` flags it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Merge an overlay once it has allocated more than this.
    #[serde(default = "one_gig")]
    pub consolidate_above: ByteSize,
    /// Merge an overlay once it is larger than this share of the layers below it.
    #[serde(default = "ten_percent")]
    pub consolidate_ratio: Percent,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {
    /// The emulator: a name looked up in `$PATH`, or an absolute path.
    #[serde(default = "default_qemu")]
    pub binary: String,
    /// `qemu-img`, used to create and inspect images.
    #[serde(default = "default_qemu_img")]
    pub img_binary: String,
    /// `qemu-storage-daemon`, which opens a stopped VM's disks to export them for a backup.
    #[serde(default = "default_storage_daemon")]
    pub storage_daemon: String,
    /// Accelerator for VMs whose spec says `auto`: `auto` here means KVM when /dev/kvm can be
    /// opened, TCG otherwise. Set `tcg` on hosts where KVM is present but unusable.
    #[serde(default)]
    pub accel: Accel,
    /// When corral runs as root, run QEMU as this unprivileged user (recommended: a dedicated
    /// `corral` user). Ignored when corral is not root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    #[serde(default = "one")]
    pub cpus: u32,
    #[serde(default = "half_gig")]
    pub memory: ByteSize,
    #[serde(default)]
    pub display: DisplayMode,
    #[serde(default)]
    pub network: NetworkMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// How long `stop` waits for the guest to power off before it ends QEMU.
    #[serde(default = "sixty_seconds")]
    pub stop_timeout: HumanDuration,
    /// How long `start` waits for QEMU's monitor to come up.
    #[serde(default = "thirty_seconds")]
    pub start_timeout: HumanDuration,
}

fn default_qemu() -> String {
    "qemu-system-x86_64".into()
}
fn default_storage_daemon() -> String {
    "qemu-storage-daemon".into()
}
fn default_qemu_img() -> String {
    "qemu-img".into()
}
fn one() -> u32 {
    1
}
fn half_gig() -> ByteSize {
    ByteSize(512 << 20)
}
fn sixty_four_k() -> ByteSize {
    ByteSize(64 << 10)
}
fn zstd_fast() -> i32 {
    1
}
fn one_gig() -> ByteSize {
    ByteSize(1 << 30)
}
fn ten_percent() -> Percent {
    Percent(10.0)
}
fn sixty_seconds() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/corral");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("corral"),
        _ => home().join(".local/share/corral"),
    }
}

fn default_run_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/corral");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("corral"),
        _ => std::env::temp_dir().join(format!("corral-{}", nix::unistd::getuid())),
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for VmDefaults {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for LifecycleConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for BackupConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for DiskConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
impl Default for HostConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl HostConfig {
    /// Loads `$CORRAL_CONFIG`, else `/etc/corral/corral.toml`, else defaults. A file named by
    /// `$CORRAL_CONFIG` must exist; the system file may be absent.
    pub fn load() -> Result<HostConfig, EngineError> {
        match std::env::var_os("CORRAL_CONFIG") {
            Some(p) if !p.is_empty() => HostConfig::load_file(Path::new(&p), true),
            _ => HostConfig::load_file(Path::new(DEFAULT_CONFIG), false),
        }
    }

    pub fn load_file(path: &Path, must_exist: bool) -> Result<HostConfig, EngineError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(HostConfig {
                    path: Some(path.to_path_buf()),
                    ..HostConfig::default()
                })
            }
            Err(e) => {
                return Err(EngineError::Config {
                    path: path.to_path_buf(),
                    message: format!("cannot read it: {e}"),
                })
            }
        };
        let mut cfg = HostConfig::parse(&text).map_err(|message| EngineError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<HostConfig, String> {
        let cfg: HostConfig = toml::from_str(text).map_err(|e| {
            let head = e
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
                .replace("TOML parse error at ", "");
            let entry = e
                .span()
                .and_then(|s| crate::alerts::rules::toml_error_entry(text, s.start))
                .map(|w| format!("{w}: "))
                .unwrap_or_default();
            format!("{}: {entry}{}", head.trim_end_matches(':'), e.message().trim())
        })?;
        if cfg.defaults.cpus == 0 || cfg.defaults.cpus > 255 {
            return Err(format!(
                "defaults.cpus = {} is out of range; use 1-255",
                cfg.defaults.cpus
            ));
        }
        for (key, dir) in [("data_dir", &cfg.data_dir), ("run_dir", &cfg.run_dir)] {
            if !dir.is_absolute() {
                return Err(format!(
                    "{key} = {:?} must be an absolute path",
                    dir.display().to_string()
                ));
            }
        }
        let m = &cfg.metrics;
        if m.interval.0 < std::time::Duration::from_secs(1) || m.interval.0 > std::time::Duration::from_secs(300) {
            return Err(format!(
                "metrics.interval = \"{}\" is out of range; use 1s to 5m (default 10s)",
                m.interval
            ));
        }
        if m.raw_retention.0 < m.interval.0 || m.average_retention.0 < std::time::Duration::from_secs(300) {
            return Err(format!(
                "metrics.raw_retention = \"{}\" and metrics.average_retention = \"{}\" must be at least one interval and 5m",
                m.raw_retention, m.average_retention
            ));
        }
        check_schedules(&cfg.schedule, text)?;
        crate::alerts::rules::check_config(&cfg.alert, &cfg.alerts, &cfg.notify, text)?;
        Ok(cfg)
    }

    /// The accelerator a VM gets: its own choice, else the host's, else KVM if usable.
    pub fn resolve_accel(&self, vm: Accel) -> Accel {
        match (vm, self.qemu.accel) {
            (Accel::Auto, Accel::Auto) => {
                let kvm_ok = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok();
                if kvm_ok {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
            (Accel::Auto, host) => host,
            (vm, _) => vm,
        }
    }
}

/// The line of the `index`-th `[[schedule]]` header in `text`, if it is written that way.
fn schedule_line(text: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            l.starts_with("[[") && l[2..].trim_start().starts_with("schedule") && {
                let rest = l[2..].trim_start()["schedule".len()..].trim_start();
                rest.starts_with("]]")
            }
        })
        .nth(index)
        .map(|(i, _)| i + 1)
}

/// Checks every schedule (its fields, its calendar) and that names are unique. Errors name
/// the entry and, when `text` is the file it came from, its line.
pub fn check_schedules(list: &[ScheduleSpec], text: &str) -> Result<(), String> {
    let at = |i: usize, name: &str| {
        let who = if name.is_empty() {
            format!("[[schedule]] number {}", i + 1)
        } else {
            format!("[[schedule]] {name:?}")
        };
        match schedule_line(text, i) {
            Some(line) => format!("{who} at line {line}"),
            None => who,
        }
    };
    for (i, s) in list.iter().enumerate() {
        s.check().map_err(|e| format!("{}: {e}", at(i, &s.name)))?;
        crate::schedule::Calendar::parse(&s.calendar).map_err(|e| {
            format!(
                "{}: calendar {e} (docs/schedules.md; `corral schedule check EXPR` tries one)",
                at(i, &s.name)
            )
        })?;
        if let Some(first) = list[..i].iter().position(|o| o.name == s.name) {
            return Err(format!(
                "{}: the name is already used by the schedule at {}; give each schedule its own name",
                at(i, &s.name),
                schedule_line(text, first)
                    .map(|l| format!("line {l}"))
                    .unwrap_or_else(|| format!("position {}", first + 1))
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys() {
        let c = HostConfig::parse(
            "data_dir = \"/srv/corral\"\nrun_dir = \"/run/c\"\n[qemu]\nbinary = \"/opt/qemu\"\naccel = \"tcg\"\n[defaults]\nmemory = \"1G\"\n[lifecycle]\nstop_timeout = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/corral"));
        assert_eq!(c.qemu.binary, "/opt/qemu");
        assert_eq!(c.qemu.accel, Accel::Tcg);
        assert_eq!(c.defaults.memory.0, 1 << 30);
        assert_eq!(c.defaults.cpus, 1);
        assert_eq!(c.lifecycle.stop_timeout.0.as_secs(), 90);
        assert_eq!(c.resolve_accel(Accel::Auto), Accel::Tcg);
        assert_eq!(c.resolve_accel(Accel::Kvm), Accel::Kvm);
    }

    #[test]
    fn rejects_bad_config_with_line() {
        let e = HostConfig::parse("data_dir = \"/x\"\n[qemu]\nbinry = \"q\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("binry"), "{e}");
        let e = HostConfig::parse("[lifecycle]\nstop_timeout = \"soon\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("not a duration"), "{e}");
        let e = HostConfig::parse("data_dir = \"relative\"\n").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn schedules_load_and_bad_ones_name_their_entry_and_line() {
        let good = "data_dir = \"/x\"\n\n# nightly backups\n[[schedule]]\nname = \"nightly\"\ncalendar = \"mon..fri 22:30\"\naction = \"backup\"\ntags = [\"prod\"]\n\n[[schedule]]\nname = \"gc\"\ncalendar = \"sun 05:00\"\naction = \"gc\"\n";
        let c = HostConfig::parse(good).unwrap();
        assert_eq!(c.schedule.len(), 2);
        assert_eq!(c.schedule[0].tags, ["prod"]);
        let e = HostConfig::parse(&good.replace("mon..fri", "mon..fir")).unwrap_err();
        assert!(
            e.contains("[[schedule]] \"nightly\" at line 4")
                && e.contains("unknown day `fir`; days are mon tue wed thu fri sat sun"),
            "{e}"
        );
        let e = HostConfig::parse(&good.replace("name = \"gc\"", "name = \"nightly\"")).unwrap_err();
        assert!(
            e.contains("line 10") && e.contains("already used") && e.contains("line 4"),
            "{e}"
        );
        let e = HostConfig::parse(&good.replace("tags = [\"prod\"]", "")).unwrap_err();
        assert!(
            e.contains("\"nightly\" at line 4") && e.contains("needs a selection"),
            "{e}"
        );
        let e = HostConfig::parse(&good.replace("action = \"gc\"", "action = \"gc\"\nkeep = 1")).unwrap_err();
        assert!(e.contains("unknown field `keep`") && e.contains("line 14"), "{e}");
        assert_eq!(
            schedule_line("[ [schedule] ]\n  [[ schedule ]]\n[[schedules]]\n", 0),
            Some(2)
        );
    }
}
