//! `corral-nbd`: a small async NBD client, the read path of corral's backups.
//!
//! QEMU exports a point-in-time view of a VM disk over NBD (`qemu-nbd`, or
//! `block-export-add` in a running QEMU), optionally with a dirty bitmap; corral asks
//! which blocks changed ([`NbdClient::dirty_extents`]) and reads only those
//! ([`NbdClient::read_into`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_nbd::NbdError> {
//! use corral_nbd::{ConnectOptions, NbdClient};
//! let opts = ConnectOptions::new("").dirty_bitmap("bm0");
//! let mut nbd = NbdClient::connect_unix("/run/corral/backup.sock", &opts).await?;
//! for extent in nbd.dirty_extents("bm0").await? {
//!     let data = nbd.read(extent.offset, extent.length as usize).await?;
//!     // ... store `data` ...
//! }
//! nbd.close().await?;
//! # Ok(()) }
//! ```
//!
//! # What is implemented
//!
//! Only what reading a disk needs, from a server that speaks the modern protocol
//! (QEMU ≥ 3.0, nbdkit, nbd-server):
//!
//! - **fixed newstyle** negotiation (oldstyle and plain newstyle are refused);
//! - options `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT` (`base:allocation`,
//!   `qemu:dirty-bitmap:NAME`, any other name) and `NBD_OPT_GO` with `NBD_INFO_BLOCK_SIZE`;
//!   `NBD_REP_ERR_*` replies become typed errors;
//! - commands `NBD_CMD_READ` (structured replies: data, hole and error chunks; simple replies
//!   if the server has no structured replies), `NBD_CMD_BLOCK_STATUS` and `NBD_CMD_DISC`.
//!
//! Left out on purpose: writes, TLS (exports are unix sockets on the same host), listing
//! exports, extended headers (64-bit requests: QEMU 7.2 lacks them) and `NBD_OPT_EXPORT_NAME`
//! (only for servers without `NBD_OPT_GO`, which QEMU has had since 2.10).
//!
//! Requests are sequential (one in flight per connection), but every request carries its
//! own cookie and replies are checked against it, so the transmission layer can become a
//! reader task that dispatches replies by cookie (as `corral-qmp` does by id) without
//! changing this API.

mod client;
mod error;
mod handshake;
mod transmission;
mod wire;

#[cfg(test)]
mod fake_server_tests;

pub use client::NbdClient;
pub use error::{NbdErrno, NbdError, RepError};

use std::time::Duration;

/// The standard context for allocation status ([`Extent::is_hole`], [`Extent::is_zero`]).
pub const BASE_ALLOCATION: &str = "base:allocation";
/// QEMU's prefix of dirty bitmap contexts: `qemu:dirty-bitmap:NAME` ([`Extent::is_dirty`]).
pub const DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";

/// `base:allocation` flag: the range is not allocated (reads from the backing or as zeros).
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the range reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:*` flag: the range changed since the bitmap was enabled.
pub const STATE_DIRTY: u32 = 1 << 0;

/// The largest read request we send even if the server allows more: the protocol's safe
/// default, and a bound on the buffer one request needs.
pub const MAX_REQUEST: u32 = 32 << 20;

/// The context name of QEMU's dirty bitmap `bitmap`.
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("{DIRTY_BITMAP_PREFIX}{bitmap}")
}

/// What to ask for when connecting.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The export to open (qemu-nbd's default export is the empty name).
    pub export_name: String,
    /// Metadata contexts to select; every one must be granted or connecting fails.
    pub meta_contexts: Vec<String>,
    /// Bound on connecting and on each request (each part of a split read is timed on its
    /// own); `None` waits forever.
    pub timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new("")
    }
}

impl ConnectOptions {
    /// Export `export_name` with `base:allocation` and a 60 s timeout.
    pub fn new(export_name: impl Into<String>) -> Self {
        ConnectOptions {
            export_name: export_name.into(),
            meta_contexts: vec![BASE_ALLOCATION.to_string()],
            timeout: Some(Duration::from_secs(60)),
        }
    }

    /// Also select QEMU's dirty bitmap `bitmap` (`qemu:dirty-bitmap:NAME`).
    pub fn dirty_bitmap(self, bitmap: &str) -> Self {
        self.meta_context(dirty_bitmap_context(bitmap))
    }

    /// Also select the context `name`.
    pub fn meta_context(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.meta_contexts.contains(&name) {
            self.meta_contexts.push(name);
        }
        self
    }

    /// Select no context at all (reads only; a server without structured replies is fine).
    pub fn without_meta_contexts(mut self) -> Self {
        self.meta_contexts.clear();
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What the server said about the export in `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`), raw.
    pub flags: u16,
    /// From `NBD_INFO_BLOCK_SIZE`, if the server sent it.
    pub block_size: Option<BlockSize>,
}

impl ExportInfo {
    pub fn read_only(&self) -> bool {
        self.flags & wire::TFLAG_READ_ONLY != 0
    }

    /// Several connections to this export see the same data (safe to read in parallel).
    pub fn can_multi_conn(&self) -> bool {
        self.flags & wire::TFLAG_CAN_MULTI_CONN != 0
    }

    /// Requests must start and end on multiples of this.
    pub fn min_block(&self) -> u32 {
        self.block_size.map_or(1, |b| b.min)
    }

    /// The largest read this client sends: the server's maximum, capped at [`MAX_REQUEST`]
    /// and rounded down to the minimum block size.
    pub fn max_request(&self) -> u32 {
        let max = self.block_size.map_or(MAX_REQUEST, |b| b.max.min(MAX_REQUEST));
        let min = self.min_block();
        (max / min * min).max(min)
    }
}

/// `NBD_INFO_BLOCK_SIZE`: the server's alignment and size limits for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    pub min: u32,
    pub preferred: u32,
    pub max: u32,
}

/// A metadata context the server selected, and the id its replies use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContext {
    pub id: u32,
    pub name: String,
}

/// A range of the export with the same status in one metadata context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// Status flags; their meaning depends on the context ([`STATE_HOLE`], [`STATE_ZERO`],
    /// [`STATE_DIRTY`]).
    pub flags: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// `base:allocation`: not allocated in the top image.
    pub fn is_hole(&self) -> bool {
        self.flags & STATE_HOLE != 0
    }

    /// `base:allocation`: reads as zeros.
    pub fn is_zero(&self) -> bool {
        self.flags & STATE_ZERO != 0
    }

    /// Dirty bitmap: changed since the bitmap was enabled.
    pub fn is_dirty(&self) -> bool {
        self.flags & STATE_DIRTY != 0
    }
}
