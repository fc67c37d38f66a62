//! The store's error type. Every variant that concerns a file names it, and the ones that
//! mean "the store is damaged" say what to do next.

use std::io;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkHash;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "no space left on the store's filesystem (writing {}): this backup was abandoned and \
         earlier backups are intact; free space, then run `corral store gc` to remove the partial files",
        path.display()
    )]
    NoSpace { path: PathBuf },

    #[error("{} is damaged: {what}. {hint}", path.display())]
    Corrupt {
        path: PathBuf,
        what: String,
        hint: &'static str,
    },

    #[error(
        "{}: format version {found} is newer than this corral understands (up to {supported}); \
         use a newer corral for this store",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },

    #[error("{} is not a corral store (no store.json); create one with Store::init", path.display())]
    NotAStore { path: PathBuf },

    #[error("{} already holds a corral store", path.display())]
    AlreadyExists { path: PathBuf },

    #[error("no backup {0} in this store")]
    BackupNotFound(String),

    #[error("backup {id} has no disk {disk:?}")]
    DiskNotFound { id: String, disk: String },

    #[error("backup {id}, disk {disk:?}, offset {offset}: chunk {hash} {problem}")]
    BadChunk {
        id: String,
        disk: String,
        offset: u64,
        hash: ChunkHash,
        problem: String,
    },

    #[error("{0}")]
    Invalid(String),

    #[error("the store is busy: {0}")]
    Busy(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// An I/O error on `path`; ENOSPC becomes [`StoreError::NoSpace`] so callers can tell a
    /// full filesystem from a broken one.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            StoreError::NoSpace { path }
        } else {
            StoreError::Io { path, source }
        }
    }

    pub(crate) fn corrupt(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.as_ref().to_path_buf(),
            what: what.into(),
            hint: "Run verify to see which backups are affected; see docs/store-format.md \
                   for the file's layout",
        }
    }
}

/// `.map_err(ctx(path))` shorthand for I/O results.
pub(crate) fn ctx<P: AsRef<Path>>(path: P) -> impl FnOnce(io::Error) -> StoreError {
    move |e| StoreError::io(path, e)
}
