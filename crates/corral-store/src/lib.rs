//! corral's backup store: content-addressed, deduplicated, compressed chunks in pack files,
//! one index per backed-up disk, one manifest per backup.
//!
//! On-disk format, locking and gc rules: `docs/store-format.md`. The API is synchronous;
//! the engine calls it from `spawn_blocking`.
//!
//! ```text
//! Store::init / Store::open
//!   begin(vm, kind, parent) → BackupWriter
//!     add_disk → write_chunk / zero / copy_unchanged_from_parent → finish → id
//!   list, manifest, read_disk (verified restore), verify, prune, delete, gc
//! ```

mod chunk;
mod error;
mod fsutil;
mod gc;
mod index;
mod lock;
mod manifest;
mod pack;
mod prune;
mod reader;
mod store;
mod verify;
mod writer;

pub use chunk::ChunkHash;
pub use error::{Result, StoreError};
pub use gc::{GcOptions, GcReport};
pub use index::DiskIndex;
// civil: the UTC calendar of manifest times, also used by the web page to show times.
pub use manifest::{
    civil, is_valid_id as is_backup_id, BackupKind, BackupStats, DiskEntry, DiskInfo, Manifest, MANIFEST_VERSION,
};
pub use prune::{select as prune_select, PruneDecision, PrunePolicy, Reasons as KeepReasons};
pub use reader::{DiskReader, RestoredChunk, RestoredRun};
pub use store::{Store, StoreConfig, STORE_VERSION};
pub use verify::{BrokenBackup, ChunkProblem, ChunkRef, VerifyReport};
pub use writer::{BackupWriter, BeginOptions, ChunkPreparer, DiskHandle, FinishOptions, PreparedChunk};
