//! Disk-layer shapes printed by `corral disk info`, `corral image list` and `corral vm clone`
//! with `--json` (and served by the REST API).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One image file in a disk's backing chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainLayer {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    pub format: String,
    /// Bytes the file takes on the host (`actual-size`).
    pub allocated: u64,
    pub virtual_size: u64,
    /// The VM whose directory holds the file; `None` for an image outside corral's tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A frozen base: read-only, and other VMs (linked clones) may stand on it.
    pub base: bool,
    /// VMs other than the owner whose chains use this layer.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub used_by: Vec<String>,
    /// Internal snapshots inside this file.
    pub snapshots: usize,
}

/// One disk of a VM: its chain from the active layer (first) down to the bottom image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskChain {
    pub disk: String,
    pub virtual_size: u64,
    pub layers: Vec<ChainLayer>,
    /// The active layer's allocation as a percentage of everything below it (`None` for a
    /// disk with a single layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay_ratio: Option<f64>,
    /// Why the consolidation policy would merge the active layer now (`None`: it would not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_limit: Option<String>,
    /// Whether `corral disk commit` can merge the active layer into the one below: false for
    /// a single layer, and for a linked clone sitting directly on a shared base.
    pub committable: bool,
}

/// A frozen base image and the linked clones that stand on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageInfo {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// The VM the base was frozen from (its directory holds the file).
    pub owner: String,
    pub disk: String,
    /// The internal snapshot the base was exported from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Unix seconds.
    pub created: i64,
    pub allocated: u64,
    pub virtual_size: u64,
    /// VMs whose chains use the base, the owner included when it still stands on it.
    pub used_by: Vec<String>,
    /// Linked clones: users other than the owner.
    pub clones: usize,
}

/// What `corral vm clone` made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloneReport {
    pub name: String,
    pub source: String,
    pub linked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    pub disks: Vec<ClonedDisk>,
    /// Spec settings that cannot be shared between two VMs and were left out of the clone.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub cleared: Vec<String>,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClonedDisk {
    pub disk: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// For a linked clone: the read-only base its overlay stands on.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub base: Option<PathBuf>,
}

/// One disk merged by `corral disk commit` (or `consolidate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitReport {
    pub vm: String,
    pub disk: String,
    /// The overlay that was merged and then removed.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub overlay: PathBuf,
    /// The layer it was merged into, now the disk's active layer.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub into: PathBuf,
    /// Bytes the overlay had allocated.
    pub merged_bytes: u64,
    /// Merged in the running VM (`block-commit`) rather than with `qemu-img commit`.
    pub live: bool,
    pub millis: u64,
}

/// What `corral disk consolidate` did with one disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsolidateItem {
    pub vm: String,
    pub disk: String,
    /// `merged`, `within-limits`, `skipped` (over a limit but cannot be merged) or `failed`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitReport>,
}
