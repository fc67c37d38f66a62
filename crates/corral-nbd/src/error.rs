//! Error types of the NBD client.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong while talking to an NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The socket could not be opened.
    #[error(
        "cannot connect to the NBD server at {addr}: {source}; is qemu-nbd (or the VM's NBD export) running there?"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The socket failed while open (other than a clean close, see [`NbdError::Disconnected`]).
    #[error("NBD I/O error while {during}: {source}")]
    Io {
        during: String,
        #[source]
        source: std::io::Error,
    },

    /// The server closed the connection in the middle of something.
    #[error("the NBD server closed the connection while {during} (the process serving the export ended)")]
    Disconnected { during: String },

    /// The server did not answer in time.
    #[error("the NBD server did not answer within {timeout:?} while {during}; the connection is dropped, reconnect to retry")]
    Timeout { during: String, timeout: Duration },

    /// The server sent something that breaks the protocol (bad magic, a reply to a request we
    /// did not send, a chunk outside the requested range...). The connection is unusable.
    #[error(
        "NBD protocol violation: {0}; the peer is not a conforming NBD server or the stream is out of step, reconnect"
    )]
    Protocol(String),

    /// The server lacks something this client needs.
    #[error("the NBD server does not support {what}; {hint}")]
    Unsupported { what: String, hint: String },

    /// The server has no export of that name (`NBD_REP_ERR_UNKNOWN`).
    #[error("the NBD server has no export named {name:?}{}; check the export name (qemu-nbd -x NAME, whose default is the empty name)", server_says(.message))]
    UnknownExport { name: String, message: String },

    /// The server did not select a metadata context we asked for, e.g. a dirty bitmap it does
    /// not export.
    #[error("the NBD server did not select the metadata context {name:?}; {}", context_hint(.name))]
    ContextNotSelected { name: String },

    /// A block-status call named a context that was not requested when connecting.
    #[error("metadata context {name:?} was not negotiated on this connection; add it to ConnectOptions (e.g. with .dirty_bitmap(NAME)) and reconnect")]
    ContextNotNegotiated { name: String },

    /// The server refused an option with an `NBD_REP_ERR_*` reply.
    #[error("the NBD server refused {option} with {reply}{}", server_says(.message))]
    OptionRefused {
        option: &'static str,
        reply: RepError,
        message: String,
    },

    /// The server failed a command (an `NBD_REPLY_TYPE_ERROR*` chunk or a simple error reply).
    #[error("the NBD server failed {command} of {len} bytes at offset {offset}: {errno}{}{}", at_offset(.error_offset), server_says(.message))]
    Command {
        command: &'static str,
        offset: u64,
        len: u64,
        errno: NbdErrno,
        message: String,
        /// Where exactly the error is, if the server said (`NBD_REPLY_TYPE_ERROR_OFFSET`).
        error_offset: Option<u64>,
    },

    /// A request outside the export.
    #[error("{what} of {len} bytes at offset {offset} is outside the export of {size} bytes")]
    OutOfRange {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },

    /// An earlier failure left the connection in an unknown state.
    #[error("the NBD connection is unusable after an earlier error ({0}); reconnect")]
    Broken(String),
}

fn server_says(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" (server says: {message})")
    }
}

fn at_offset(offset: &Option<u64>) -> String {
    offset.map(|o| format!(" at byte {o}")).unwrap_or_default()
}

fn context_hint(name: &str) -> String {
    match name.strip_prefix(crate::DIRTY_BITMAP_PREFIX) {
        Some(bitmap) => format!(
            "the export has no dirty bitmap {bitmap:?}: export it with qemu-nbd --bitmap={bitmap} \
             (or block-export-add ... bitmaps=[\"{bitmap}\"]) and check the bitmap exists \
             (qemu-img info shows persistent bitmaps)"
        ),
        None => "the server does not know this context; check its spelling".to_string(),
    }
}

/// The `NBD_REP_ERR_*` option replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepError {
    Unsup,
    Policy,
    Invalid,
    Platform,
    TlsReqd,
    Unknown,
    Shutdown,
    BlockSizeReqd,
    TooBig,
    Other(u32),
}

impl RepError {
    /// Maps a reply type with the error bit set to a [`RepError`].
    pub fn from_wire(reply: u32) -> RepError {
        match reply & !crate::wire::REP_ERR_BIT {
            1 => RepError::Unsup,
            2 => RepError::Policy,
            3 => RepError::Invalid,
            4 => RepError::Platform,
            5 => RepError::TlsReqd,
            6 => RepError::Unknown,
            7 => RepError::Shutdown,
            8 => RepError::BlockSizeReqd,
            9 => RepError::TooBig,
            _ => RepError::Other(reply),
        }
    }
}

impl fmt::Display for RepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RepError::Unsup => "NBD_REP_ERR_UNSUP (option not supported)",
            RepError::Policy => "NBD_REP_ERR_POLICY (forbidden by server policy)",
            RepError::Invalid => "NBD_REP_ERR_INVALID (invalid request)",
            RepError::Platform => "NBD_REP_ERR_PLATFORM (not available on this platform)",
            RepError::TlsReqd => "NBD_REP_ERR_TLS_REQD (the server requires TLS)",
            RepError::Unknown => "NBD_REP_ERR_UNKNOWN (no such export)",
            RepError::Shutdown => "NBD_REP_ERR_SHUTDOWN (the server is shutting down)",
            RepError::BlockSizeReqd => "NBD_REP_ERR_BLOCK_SIZE_REQD (block size negotiation required)",
            RepError::TooBig => "NBD_REP_ERR_TOO_BIG (request too big)",
            RepError::Other(n) => return write!(f, "error reply {n:#x}"),
        };
        f.write_str(s)
    }
}

/// The error values of NBD command replies (errno-like, fixed by the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdErrno {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    Overflow,
    NotSup,
    Shutdown,
    Other(u32),
}

impl NbdErrno {
    pub fn from_wire(value: u32) -> NbdErrno {
        match value {
            1 => NbdErrno::Perm,
            5 => NbdErrno::Io,
            12 => NbdErrno::NoMem,
            22 => NbdErrno::Inval,
            28 => NbdErrno::NoSpc,
            75 => NbdErrno::Overflow,
            95 => NbdErrno::NotSup,
            108 => NbdErrno::Shutdown,
            n => NbdErrno::Other(n),
        }
    }
}

impl fmt::Display for NbdErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            NbdErrno::Perm => "EPERM (operation not permitted)",
            NbdErrno::Io => "EIO (I/O error on the server's storage)",
            NbdErrno::NoMem => "ENOMEM (server out of memory)",
            NbdErrno::Inval => "EINVAL (invalid request)",
            NbdErrno::NoSpc => "ENOSPC (no space left)",
            NbdErrno::Overflow => "EOVERFLOW (request too large)",
            NbdErrno::NotSup => "ENOTSUP (not supported)",
            NbdErrno::Shutdown => "ESHUTDOWN (server shutting down)",
            NbdErrno::Other(n) => return write!(f, "error {n}"),
        };
        f.write_str(s)
    }
}

impl NbdError {
    /// Turns an I/O error into [`NbdError::Disconnected`] when it means the peer went away.
    pub(crate) fn io(during: impl Into<String>, source: std::io::Error) -> NbdError {
        use std::io::ErrorKind::*;
        let during = during.into();
        match source.kind() {
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => NbdError::Disconnected { during },
            _ => NbdError::Io { during, source },
        }
    }
}
