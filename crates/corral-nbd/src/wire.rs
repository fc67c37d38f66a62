//! The NBD wire format: constants and pure encoders/decoders (no I/O).
//!
//! Everything on the wire is big-endian. Names follow the protocol document so they can be
//! looked up there; only what this client uses is defined.

use crate::error::NbdError;

// --- Handshake -------------------------------------------------------------------------------

/// `"NBDMAGIC"`: first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`: the newstyle magic; also prefixes every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flags (server → client, 16 bits).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (client → server, 32 bits).
pub const CLIENT_FLAG_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_FLAG_NO_ZEROES: u32 = 1 << 1;

/// Options.
pub const OPT_ABORT: u32 = 2;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
/// Set in every `NBD_REP_ERR_*` reply type.
pub const REP_ERR_BIT: u32 = 1 << 31;

/// `NBD_INFO_*` types (in `NBD_OPT_GO` requests and `NBD_REP_INFO` replies).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (in `NBD_INFO_EXPORT`).
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option replies longer than this are refused: no reply this client understands comes near
/// it, and it stops a broken server from making us allocate gigabytes.
pub const MAX_OPTION_REPLY: u32 = 64 * 1024;

// --- Transmission ----------------------------------------------------------------------------

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Length of a request header, a simple reply header and a structured reply chunk header.
pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const STRUCTURED_REPLY_LEN: usize = 20;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Structured reply chunk flags and types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Set in every error chunk type.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

/// A request header (`NBD_CMD_*`); the cookie is echoed in the reply (the protocol's
/// "handle"), which is what lets replies be matched to requests when several are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// An option request: `IHAVEOPT`, option, length, data.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Data of `NBD_OPT_GO`: export name and the `NBD_INFO_*` items we ask for.
pub fn encode_go(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(export.len() as u32).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for info in infos {
        b.extend_from_slice(&info.to_be_bytes());
    }
    b
}

/// Data of `NBD_OPT_SET_META_CONTEXT`: export name and context queries.
pub fn encode_set_meta_context(export: &str, queries: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(export.len() as u32).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&(q.len() as u32).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

/// The fixed part of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply: u32,
    pub len: u32,
}

impl OptionReplyHeader {
    pub const LEN: usize = 20;

    pub fn parse(b: &[u8; Self::LEN]) -> Result<OptionReplyHeader, NbdError> {
        let magic = be64(&b[0..8]);
        if magic != OPT_REPLY_MAGIC {
            return Err(NbdError::Protocol(format!(
                "option reply magic is {magic:#x}, expected {OPT_REPLY_MAGIC:#x}"
            )));
        }
        Ok(OptionReplyHeader {
            option: be32(&b[8..12]),
            reply: be32(&b[12..16]),
            len: be32(&b[16..20]),
        })
    }
}

/// An `NBD_REP_INFO` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    Export {
        size: u64,
        flags: u16,
    },
    BlockSize {
        min: u32,
        preferred: u32,
        max: u32,
    },
    /// Name, description or anything newer: not used here.
    Other(u16),
}

pub fn parse_info(b: &[u8]) -> Result<Info, NbdError> {
    if b.len() < 2 {
        return Err(NbdError::Protocol(format!("NBD_REP_INFO of {} bytes", b.len())));
    }
    let kind = be16(&b[0..2]);
    let want = match kind {
        INFO_EXPORT => 12,
        INFO_BLOCK_SIZE => 14,
        other => return Ok(Info::Other(other)),
    };
    if b.len() != want {
        return Err(NbdError::Protocol(format!(
            "NBD_REP_INFO type {kind} is {} bytes, expected {want}",
            b.len()
        )));
    }
    Ok(match kind {
        INFO_EXPORT => Info::Export {
            size: be64(&b[2..10]),
            flags: be16(&b[10..12]),
        },
        _ => Info::BlockSize {
            min: be32(&b[2..6]),
            preferred: be32(&b[6..10]),
            max: be32(&b[10..14]),
        },
    })
}

/// An `NBD_REP_META_CONTEXT` payload: the id the server gives the context, and its name.
pub fn parse_meta_context(b: &[u8]) -> Result<(u32, String), NbdError> {
    if b.len() < 4 {
        return Err(NbdError::Protocol(format!("NBD_REP_META_CONTEXT of {} bytes", b.len())));
    }
    let name =
        String::from_utf8(b[4..].to_vec()).map_err(|_| NbdError::Protocol("meta context name is not UTF-8".into()))?;
    Ok((be32(&b[0..4]), name))
}

/// A reply header, once its magic told which kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// Simple reply: for READ without structured replies, `len` bytes of data follow on success.
    Simple { error: u32, cookie: u64 },
    /// One chunk of a structured reply: `len` bytes of payload follow.
    Chunk {
        flags: u16,
        kind: u16,
        cookie: u64,
        len: u32,
    },
}

impl ReplyHeader {
    pub fn cookie(&self) -> u64 {
        match *self {
            ReplyHeader::Simple { cookie, .. } | ReplyHeader::Chunk { cookie, .. } => cookie,
        }
    }
}

/// The number of bytes that follow a reply's 4-byte magic in its header.
pub fn reply_header_rest(magic: u32) -> Result<usize, NbdError> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_LEN - 4),
        STRUCTURED_REPLY_MAGIC => Ok(STRUCTURED_REPLY_LEN - 4),
        other => Err(NbdError::Protocol(format!(
            "reply magic {other:#010x} is neither simple nor structured"
        ))),
    }
}

/// Parses a reply header from its magic and the [`reply_header_rest`] bytes after it.
pub fn parse_reply_header(magic: u32, rest: &[u8]) -> Result<ReplyHeader, NbdError> {
    if rest.len() != reply_header_rest(magic)? {
        return Err(NbdError::Protocol("short reply header".into()));
    }
    Ok(match magic {
        SIMPLE_REPLY_MAGIC => ReplyHeader::Simple {
            error: be32(&rest[0..4]),
            cookie: be64(&rest[4..12]),
        },
        _ => ReplyHeader::Chunk {
            flags: be16(&rest[0..2]),
            kind: be16(&rest[2..4]),
            cookie: be64(&rest[4..12]),
            len: be32(&rest[12..16]),
        },
    })
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` payload: (offset, length).
pub fn parse_offset_hole(b: &[u8]) -> Result<(u64, u32), NbdError> {
    if b.len() != 12 {
        return Err(NbdError::Protocol(format!(
            "OFFSET_HOLE chunk of {} bytes, expected 12",
            b.len()
        )));
    }
    Ok((be64(&b[0..8]), be32(&b[8..12])))
}

/// An error chunk's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorChunk {
    pub error: u32,
    pub message: String,
    /// Only in `NBD_REPLY_TYPE_ERROR_OFFSET`.
    pub offset: Option<u64>,
}

/// Parses an error chunk (`kind` has the error bit). Unknown error types still carry the
/// error value and message in front, which is all we use of them.
pub fn parse_error_chunk(kind: u16, b: &[u8]) -> Result<ErrorChunk, NbdError> {
    if b.len() < 6 {
        return Err(NbdError::Protocol(format!("error chunk of {} bytes", b.len())));
    }
    let error = be32(&b[0..4]);
    let msg_len = be16(&b[4..6]) as usize;
    let rest = &b[6..];
    if rest.len() < msg_len {
        return Err(NbdError::Protocol(format!(
            "error chunk message of {msg_len} bytes in a payload of {}",
            b.len()
        )));
    }
    let message = String::from_utf8_lossy(&rest[..msg_len]).into_owned();
    let tail = &rest[msg_len..];
    let offset = match kind {
        REPLY_TYPE_ERROR if tail.is_empty() => None,
        REPLY_TYPE_ERROR_OFFSET if tail.len() == 8 => Some(be64(tail)),
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            return Err(NbdError::Protocol(format!(
                "error chunk type {kind:#x} has {} stray bytes",
                tail.len()
            )))
        }
        _ => None,
    };
    Ok(ErrorChunk { error, message, offset })
}

/// An `NBD_REPLY_TYPE_BLOCK_STATUS` payload: context id and (length, flags) descriptors.
pub fn parse_block_status(b: &[u8]) -> Result<(u32, Vec<(u32, u32)>), NbdError> {
    if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
        return Err(NbdError::Protocol(format!(
            "BLOCK_STATUS chunk of {} bytes is not 4 + 8n",
            b.len()
        )));
    }
    let id = be32(&b[0..4]);
    let descs = b[4..]
        .chunks_exact(8)
        .map(|d| (be32(&d[0..4]), be32(&d[4..8])))
        .collect();
    Ok((id, descs))
}

pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().expect("2 bytes"))
}
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
pub fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
