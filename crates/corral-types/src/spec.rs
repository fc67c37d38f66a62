//! The VM spec: one TOML document per VM.
//!
//! Parsing is strict: unknown fields are refused, and every error names the field and, when
//! the spec came from a document, the line. [`VmSpec::from_toml`] parses and validates;
//! generated values (UUID, MAC, disk names) are filled in by the engine when it stores a spec,
//! so a stored spec is always complete.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::human::ByteSize;
use crate::name::VmName;

/// Where in a spec an error is, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The document does not parse or has the wrong shape (the message from the TOML parser
    /// already names the line, column and field).
    #[error("invalid VM spec: {0}")]
    Parse(String),
    /// A value that parses but makes no sense, e.g. a disk with neither path nor size.
    #[error("invalid VM spec{}: {field}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Invalid {
        field: String,
        message: String,
        line: Option<usize>,
    },
}

impl SpecError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }
}

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? } default $def:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $(#[serde(rename = $s)] $variant,)+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s,)+ } }
            pub const ALL: &'static [&'static str] = &[$($s),+];
        }
        impl Default for $name { fn default() -> Self { $name::$def } }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok($name::$variant),)+
                    _ => Err(format!("{s:?} is not one of: {}", $name::ALL.join(", "))) }
            }
        }
    };
}

str_enum!(
    /// Which accelerator QEMU uses. `auto` takes the host default from the config file.
    Accel { Auto = "auto", Kvm = "kvm", Tcg = "tcg" } default Auto
);
str_enum!(
    /// Disk role: `system` disks are always backed up; `data` disks come back empty from a
    /// skeleton backup.
    DiskRole { System = "system", Data = "data" } default System
);
str_enum!(DiskBus { Virtio = "virtio", Scsi = "scsi", Sata = "sata", Ide = "ide" } default Virtio);
str_enum!(DiskFormat { Qcow2 = "qcow2", Raw = "raw" } default Qcow2);
str_enum!(
    /// `cdrom-once` boots the CD-ROM on the next start only (for installation), then the disk.
    BootFrom { Auto = "auto", Disk = "disk", Cdrom = "cdrom", CdromOnce = "cdrom-once", Kernel = "kernel" } default Auto
);
str_enum!(NetworkMode { User = "user", None = "none" } default User);
str_enum!(NicModel { Virtio = "virtio", E1000 = "e1000", Rtl8139 = "rtl8139" } default Virtio);
str_enum!(Proto { Tcp = "tcp", Udp = "udp" } default Tcp);
str_enum!(DisplayMode { Vnc = "vnc", None = "none" } default Vnc);
str_enum!(Machine { Q35 = "q35", Pc = "pc" } default Q35);

/// A complete VM definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: VmName,
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    #[serde(default)]
    pub machine: Machine,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub autostart: bool,
    /// Keep the guest's serial console in a log file (`corral vm console`).
    #[serde(default = "yes")]
    pub serial_log: bool,
    /// Add a virtio-serial channel for the QEMU guest agent (`qemu-ga` in the guest).
    #[serde(default)]
    pub guest_agent: bool,
    /// Add a virtio balloon device: QEMU then reports the guest's memory as the balloon sees
    /// it (`corral metrics`), and a guest with the driver can give memory back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub balloon: bool,
    /// An ISO attached as a CD-ROM drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub cdrom: Option<PathBuf>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub boot: BootSpec,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub display: DisplaySpec,
    #[serde(default, skip_serializing_if = "BackupSpec::is_default")]
    pub backup: BackupSpec,
}

/// How `corral backup run` treats this VM unless told otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// Back up the system disk(s) only and record the data disks' shape (`--skeleton` by
    /// default; `--all-disks` overrides it for one run).
    #[serde(default)]
    pub skeleton: bool,
}

impl BackupSpec {
    pub fn is_default(&self) -> bool {
        *self == BackupSpec::default()
    }
}

fn default_cpus() -> u32 {
    1
}
fn default_memory() -> ByteSize {
    ByteSize(512 << 20)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Short name used on the command line (`corral disk resize VM NAME`); generated
    /// (`disk0`, `disk1`, …) when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// An existing image, or where to create one when `size` is given too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub path: Option<PathBuf>,
    /// Size of a qcow2 image that corral creates for you.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default)]
    pub role: DiskRole,
    #[serde(default)]
    pub bus: DiskBus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// `auto`: kernel when one is given, else the first disk, else the CD-ROM.
    #[serde(default)]
    pub from: BootFrom,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default)]
    pub model: NicModel,
    /// Generated (52:54:00:xx:xx:xx) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<PortForward>,
}

/// A user-mode network port forward: connections to `host_addr:host` reach the guest's `guest` port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    #[serde(default)]
    pub proto: Proto,
    #[serde(default = "loopback")]
    pub host_addr: String,
    pub host: u16,
    pub guest: u16,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DisplaySpec {
    #[serde(default)]
    pub mode: DisplayMode,
    /// A fixed VNC TCP port (5900-65535) on 127.0.0.1; automatic when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc_port: Option<u16>,
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random address in the 52:54:00 range QEMU/KVM users recognise (locally administered, unicast).
    pub fn generate() -> MacAddr {
        let r: [u8; 3] = rand::random();
        MacAddr([0x52, 0x54, 0x00, r[0], r[1], r[2]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not a MAC address; write six hex pairs like 52:54:00:12:34:56");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(err());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if b[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast address; a NIC needs a unicast one (even first byte)"
            ));
        }
        Ok(MacAddr(b))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Tags follow the name rule but are shorter-lived labels; same character set keeps them safe
/// in URLs and shell scripts.
fn check_tag(t: &str) -> Result<(), String> {
    VmName::new(t)
        .map(|_| ())
        .map_err(|e| e.to_string().replacen("name", "tag", 1))
}

fn check_disk_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 32 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("disk name {n:?} must be 1-32 characters of A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

impl VmSpec {
    /// A minimal spec with defaults for everything but the name.
    pub fn new(name: VmName) -> VmSpec {
        VmSpec {
            name,
            uuid: None,
            description: None,
            cpus: default_cpus(),
            memory: default_memory(),
            machine: Machine::default(),
            accel: Accel::default(),
            tags: vec![],
            autostart: false,
            serial_log: true,
            guest_agent: false,
            balloon: false,
            cdrom: None,
            disks: vec![],
            boot: BootSpec::default(),
            network: NetworkSpec::default(),
            display: DisplaySpec::default(),
            backup: BackupSpec::default(),
        }
    }

    /// Parses and validates a TOML document. Errors carry the line of the offending field.
    pub fn from_toml(src: &str) -> Result<VmSpec, SpecError> {
        let spec: VmSpec = toml::from_str(src).map_err(|e| SpecError::Parse(one_line(&e)))?;
        spec.validate().map_err(|e| e.locate(src))?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a VmSpec always serialises")
    }

    /// How the VM boots, with `auto` resolved.
    pub fn boot_from(&self) -> BootFrom {
        match self.boot.from {
            BootFrom::Auto if self.boot.kernel.is_some() => BootFrom::Kernel,
            BootFrom::Auto if self.disks.is_empty() && self.cdrom.is_some() => BootFrom::Cdrom,
            BootFrom::Auto => BootFrom::Disk,
            other => other,
        }
    }

    /// Semantic checks that the TOML shape cannot express.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.cpus == 0 || self.cpus > 255 {
            return Err(SpecError::invalid(
                "cpus",
                format!("{} vCPUs is out of range; use 1-255", self.cpus),
            ));
        }
        if self.memory.0 < 16 << 20 {
            return Err(SpecError::invalid(
                "memory",
                format!("{} is too little; give at least 16M", self.memory),
            ));
        }
        if !self.memory.0.is_multiple_of(1 << 20) {
            return Err(SpecError::invalid(
                "memory",
                format!("{} is not a whole number of MiB; QEMU needs e.g. 512M", self.memory),
            ));
        }
        for t in &self.tags {
            check_tag(t).map_err(|m| SpecError::invalid("tags", m))?;
        }
        let mut names = BTreeSet::new();
        for (i, d) in self.disks.iter().enumerate() {
            let f = format!("disks[{i}]");
            if d.path.is_none() && d.size.is_none() {
                return Err(SpecError::invalid(
                    f,
                    "a disk needs `path` (an existing image) or `size` (corral creates a qcow2), e.g. size = \"8G\"",
                ));
            }
            if let Some(s) = d.size {
                if s.0 < 1 << 20 {
                    return Err(SpecError::invalid(
                        format!("{f}.size"),
                        format!("{s} is too small; give at least 1M"),
                    ));
                }
                if d.format == DiskFormat::Raw && d.path.is_none() {
                    return Err(SpecError::invalid(format!("{f}.format"), "corral creates qcow2 images only; use format = \"qcow2\" or give the path of an existing raw image"));
                }
            }
            if !d.name.is_empty() {
                check_disk_name(&d.name).map_err(|m| SpecError::invalid(format!("{f}.name"), m))?;
                if !names.insert(d.name.clone()) {
                    return Err(SpecError::invalid(
                        format!("{f}.name"),
                        format!("disk name {:?} is used twice", d.name),
                    ));
                }
            }
        }
        match self.boot_from() {
            BootFrom::Kernel if self.boot.kernel.is_none() => {
                return Err(SpecError::invalid(
                    "boot.kernel",
                    "boot.from = \"kernel\" needs boot.kernel (and usually boot.initrd)",
                ));
            }
            BootFrom::Cdrom | BootFrom::CdromOnce if self.cdrom.is_none() => {
                return Err(SpecError::invalid(
                    "cdrom",
                    "booting from the CD-ROM needs `cdrom = \"/path/to.iso\"`",
                ));
            }
            BootFrom::Disk if self.disks.is_empty() => {
                return Err(SpecError::invalid(
                    "disks",
                    "the VM boots from disk but has none; add [[disks]] or set boot.kernel",
                ));
            }
            _ => {}
        }
        if self.boot.kernel.is_none() && (self.boot.initrd.is_some() || self.boot.cmdline.is_some()) {
            return Err(SpecError::invalid(
                "boot",
                "boot.initrd and boot.cmdline only make sense with boot.kernel",
            ));
        }
        let mut ports = BTreeSet::new();
        for (i, fw) in self.network.forwards.iter().enumerate() {
            if self.network.mode != NetworkMode::User {
                return Err(SpecError::invalid(
                    "network.forwards",
                    "port forwards need network.mode = \"user\"",
                ));
            }
            if fw.host_addr.parse::<std::net::IpAddr>().is_err() {
                return Err(SpecError::invalid(
                    format!("network.forwards[{i}].host_addr"),
                    format!("{:?} is not an IP address", fw.host_addr),
                ));
            }
            if fw.host == 0 || fw.guest == 0 {
                return Err(SpecError::invalid(
                    format!("network.forwards[{i}]"),
                    "ports must be 1-65535",
                ));
            }
            if !ports.insert((fw.proto, fw.host)) {
                return Err(SpecError::invalid(
                    format!("network.forwards[{i}].host"),
                    format!("{}/{} is forwarded twice", fw.proto, fw.host),
                ));
            }
        }
        if let Some(p) = self.display.vnc_port {
            if p < 5900 {
                return Err(SpecError::invalid(
                    "display.vnc_port",
                    format!("{p} is below 5900; VNC ports are 5900 + display number"),
                ));
            }
        }
        Ok(())
    }
}

/// The TOML crate's message spans several lines with a caret diagram; keep it readable but
/// on as few lines as it needs.
fn one_line(e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(_) => {
            let full = e.to_string();
            let head = full
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches(':')
                .to_string();
            let head = head.replace("TOML parse error at ", "");
            format!("{head}: {msg}")
        }
        None => msg.to_string(),
    }
}

impl SpecError {
    /// Finds the line of `field` in the source document (`disks[1].size`, `boot.kernel`, `cpus`).
    fn locate(self, src: &str) -> SpecError {
        let SpecError::Invalid { field, message, .. } = self else {
            return self;
        };
        let line = find_field_line(src, &field);
        SpecError::Invalid { field, message, line }
    }
}

fn find_field_line(src: &str, field: &str) -> Option<usize> {
    // Split "disks[1].size" into table "disks", index 1, key "size".
    let (head, key) = match field.split_once('.') {
        Some((h, k)) => (h, Some(k)),
        None => (field, None),
    };
    let (table, index) = match head.split_once('[') {
        Some((t, i)) => (t, i.trim_end_matches(']').parse::<usize>().ok()),
        None => (head, None),
    };
    let key_start = |line: &str, k: &str| {
        let l = line.trim_start();
        l.strip_prefix(k).is_some_and(|r| r.trim_start().starts_with('='))
    };
    let mut current: String = String::new();
    let mut seen = 0usize;
    let mut table_line = None;
    for (n, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if line.starts_with("[[") && name == table {
                if Some(seen) == index {
                    table_line = Some(n + 1);
                }
                seen += 1;
            } else if name == table && index.is_none() {
                table_line = Some(n + 1);
            }
            current = if line.starts_with("[[") {
                format!("{name}[{}]", seen.saturating_sub(1))
            } else {
                name
            };
            continue;
        }
        let in_table = match index {
            Some(i) => current == format!("{table}[{i}]"),
            None => current == table,
        };
        match key {
            Some(k) if in_table && key_start(line, k.split('.').next().unwrap_or(k)) => return Some(n + 1),
            None if current.is_empty() && index.is_none() && key_start(line, table) => return Some(n + 1),
            _ => {}
        }
    }
    table_line
}

#[cfg(test)]
mod tests;
