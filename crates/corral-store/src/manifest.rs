//! Backup manifests (`backups/ID/manifest.json`), backup ids and the UTC calendar helpers
//! they and prune need.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every disk's content read in full.
    Full,
    /// Only the changed chunks read; the rest taken from the parent's disk indexes.
    Incremental,
    /// The system disk(s) read in full; the other disks are recorded (size, bus, format)
    /// but not stored, and come back empty.
    Skeleton,
}

/// What the caller knows about a disk; stored as is in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskInfo {
    /// Unique within the backup; how restore and incrementals find the disk.
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub bus: String,
    #[serde(default)]
    pub format: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskEntry {
    #[serde(flatten)]
    pub info: DiskInfo,
    pub chunk_size: u32,
    /// File name of the disk index inside the backup's directory; `None` when not stored.
    pub index: Option<String>,
    /// False for a skeleton-empty disk (its content is not in the store).
    pub stored: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackupStats {
    /// Bytes handed to `write_chunk` (zeros included).
    pub bytes_read: u64,
    /// Chunks this backup added to the store and their uncompressed size.
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// What those new chunks take in packs (compressed, with record headers).
    pub stored_bytes: u64,
    /// Written chunks that were already in the store (deduplicated).
    pub reused_chunks: u64,
    pub reused_bytes: u64,
    /// Chunks taken unread from the parent.
    pub parent_chunks: u64,
    pub zero_chunks: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub vm: String,
    /// The VM's spec document, opaque to the store.
    pub spec: serde_json::Value,
    pub kind: BackupKind,
    pub parent: Option<String>,
    /// RFC 3339, UTC, when the backup began.
    pub time: String,
    pub time_unix: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    pub disks: Vec<DiskEntry>,
    pub stats: BackupStats,
}

impl Manifest {
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::corrupt(path, format!("not a valid manifest ({e})")))?;
        if v.format_version > MANIFEST_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: v.format_version,
                supported: MANIFEST_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(path, format!("not a valid manifest ({e})")))
    }

    pub fn disk(&self, name: &str) -> Option<&DiskEntry> {
        self.disks.iter().find(|d| d.info.name == name)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A backup id: UTC time to the millisecond, then 32 random bits, e.g.
/// `20250301T120501.123Z-9f3a0c21`. Ids sort by time; the random part keeps two backups
/// begun in the same millisecond apart. Safe as a file name.
pub fn new_backup_id(unix_ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ms.div_euclid(1000));
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{:03}Z-{:08x}",
        unix_ms.rem_euclid(1000),
        rand::random::<u32>()
    )
}

/// True for strings [`new_backup_id`] could have made: keeps ids usable as path components.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 29
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            20 => c == b'-',
            21.. => c.is_ascii_hexdigit(),
            _ => c.is_ascii_digit(),
        })
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339(unix_ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ms.div_euclid(1000));
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        unix_ms.rem_euclid(1000)
    )
}

/// Seconds since the epoch → (year, month, day, hour, minute, second), UTC.
pub fn civil(unix_s: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix_s.div_euclid(86400);
    let secs = unix_s.rem_euclid(86400) as u32;
    let (y, m, d) = date_from_days(days);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day). Works in 400-year eras
/// of 146097 days, with years starting on March 1 so the leap day ends the year.
pub fn date_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(date_from_days(0), (1970, 1, 1));
        assert_eq!(date_from_days(-1), (1969, 12, 31));
        assert_eq!(date_from_days(11016), (2000, 2, 29));
        assert_eq!(date_from_days(11017), (2000, 3, 1));
        assert_eq!(date_from_days(19782), (2024, 2, 29));
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_sort_by_time_and_are_path_safe() {
        let a = new_backup_id(1_709_251_199_999);
        let b = new_backup_id(1_709_251_200_000);
        assert!(a.starts_with("20240229T235959.999Z-"), "{a}");
        assert!(a < b);
        assert!(is_valid_id(&a) && is_valid_id(&b));
        assert!(!is_valid_id("../../etc/passwd"));
        assert!(!is_valid_id(&".".repeat(29)));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn manifest_version_checked() {
        let e = Manifest::decode(Path::new("m.json"), br#"{"format_version": 99}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.json") && e.contains("99"), "{e}");
        let e = Manifest::decode(Path::new("m.json"), b"{nope").unwrap_err().to_string();
        assert!(e.contains("m.json") && e.contains("not a valid manifest"), "{e}");
    }
}
