//! The transmission phase: one request out, its reply (simple, or structured chunks up to
//! `NBD_REPLY_FLAG_DONE`) in, checked against the request.
//!
//! Requests are sequential: [`Transmission`] sends a request and reads its whole reply
//! before the next. Every reply must carry the cookie of the request in flight; a pipelined
//! version would keep a table of cookies → waiting requests here instead.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{NbdErrno, NbdError};
use crate::wire::{self, ReplyHeader, Request};

/// Bound on any chunk payload held in memory (block status, errors). Data chunks go straight
/// into the caller's buffer and are bounded by the request instead.
const MAX_CHUNK_PAYLOAD: u32 = 64 << 20;

/// The descriptors one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk gave for one context.
pub(crate) type ContextExtents = (u32, Vec<(u32, u32)>);

pub(crate) struct Transmission<S> {
    stream: S,
    structured: bool,
    next_cookie: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transmission<S> {
    pub fn new(stream: S, structured: bool) -> Self {
        Transmission {
            stream,
            structured,
            next_cookie: 1,
        }
    }

    /// `NBD_CMD_READ` of `buf.len()` bytes (≤ the server's maximum) at `offset`. Holes are
    /// written as zeros.
    pub async fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let len = u32::try_from(buf.len()).map_err(|_| NbdError::Protocol("read request over 4 GiB".into()))?;
        let req = self.send(wire::CMD_READ, offset, len).await?;
        let during = "reading a READ reply";
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut error: Option<NbdError> = None;
        loop {
            let (flags, kind, plen) = match self.header(&req).await? {
                ReplyHeader::Simple { error: 0, .. } if !self.structured => {
                    return self.read_exact(buf, during).await;
                }
                ReplyHeader::Simple { error: 0, .. } => {
                    return Err(NbdError::Protocol(
                        "a successful simple reply to READ after structured replies were negotiated".into(),
                    ))
                }
                ReplyHeader::Simple { error, .. } => return Err(command_error(&req, error, String::new(), None)),
                ReplyHeader::Chunk { flags, kind, len, .. } => (flags, kind, len),
            };
            match kind {
                wire::REPLY_TYPE_OFFSET_DATA => {
                    if plen < 8 {
                        return Err(NbdError::Protocol(format!("OFFSET_DATA chunk of {plen} bytes")));
                    }
                    let mut o = [0u8; 8];
                    self.read_exact(&mut o, during).await?;
                    let at = u64::from_be_bytes(o);
                    let range = within(&req, at, u64::from(plen - 8), "OFFSET_DATA")?;
                    self.read_exact(&mut buf[range], during).await?;
                    covered.push((at, u64::from(plen - 8)));
                }
                wire::REPLY_TYPE_OFFSET_HOLE => {
                    let p = self.payload(plen, during).await?;
                    let (at, hole) = wire::parse_offset_hole(&p)?;
                    let range = within(&req, at, u64::from(hole), "OFFSET_HOLE")?;
                    buf[range].fill(0);
                    covered.push((at, u64::from(hole)));
                }
                wire::REPLY_TYPE_NONE => none_chunk(flags, plen)?,
                k if k & wire::REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(&req, k, plen).await?;
                    error.get_or_insert(e);
                }
                k => return Err(unexpected_chunk(k, "READ")),
            }
            if flags & wire::REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        check_coverage(&req, covered)
    }

    /// `NBD_CMD_BLOCK_STATUS` of `len` bytes at `offset`: the descriptors of every context
    /// the server answered for. The server may cover less or (last extent) more than `len`.
    pub async fn block_status(&mut self, offset: u64, len: u32) -> Result<Vec<ContextExtents>, NbdError> {
        if !self.structured {
            return Err(NbdError::Unsupported {
                what: "structured replies".into(),
                hint: "block status needs them".into(),
            });
        }
        let req = self.send(wire::CMD_BLOCK_STATUS, offset, len).await?;
        let during = "reading a BLOCK_STATUS reply";
        let mut out: Vec<ContextExtents> = Vec::new();
        let mut error: Option<NbdError> = None;
        loop {
            let (flags, kind, plen) = match self.header(&req).await? {
                ReplyHeader::Simple { error: 0, .. } => {
                    return Err(NbdError::Protocol("a simple success reply to BLOCK_STATUS".into()))
                }
                ReplyHeader::Simple { error, .. } => return Err(command_error(&req, error, String::new(), None)),
                ReplyHeader::Chunk { flags, kind, len, .. } => (flags, kind, len),
            };
            match kind {
                wire::REPLY_TYPE_BLOCK_STATUS => {
                    let p = self.payload(plen, during).await?;
                    let (id, descs) = wire::parse_block_status(&p)?;
                    if descs.is_empty() || descs.iter().any(|&(l, _)| l == 0) {
                        return Err(NbdError::Protocol(format!(
                            "BLOCK_STATUS chunk for context {id} has no extent or an empty one"
                        )));
                    }
                    if out.iter().any(|(seen, _)| *seen == id) {
                        return Err(NbdError::Protocol(format!("two BLOCK_STATUS chunks for context {id}")));
                    }
                    out.push((id, descs));
                }
                wire::REPLY_TYPE_NONE => none_chunk(flags, plen)?,
                k if k & wire::REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(&req, k, plen).await?;
                    error.get_or_insert(e);
                }
                k => return Err(unexpected_chunk(k, "BLOCK_STATUS")),
            }
            if flags & wire::REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// `NBD_CMD_WRITE` of `data` (≤ the server's maximum) at `offset`.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        let len = u32::try_from(data.len()).map_err(|_| NbdError::Protocol("write request over 4 GiB".into()))?;
        let req = self.send_with(wire::CMD_WRITE, offset, len, data).await?;
        self.empty_reply(&req).await
    }

    /// `NBD_CMD_WRITE_ZEROES` of `len` bytes at `offset` (no payload).
    pub async fn write_zeroes(&mut self, offset: u64, len: u32) -> Result<(), NbdError> {
        let req = self.send(wire::CMD_WRITE_ZEROES, offset, len).await?;
        self.empty_reply(&req).await
    }

    /// `NBD_CMD_FLUSH`: everything written so far is on stable storage when it returns.
    pub async fn flush(&mut self) -> Result<(), NbdError> {
        let req = self.send(wire::CMD_FLUSH, 0, 0).await?;
        self.empty_reply(&req).await
    }

    /// The reply of a command that returns no data: a simple reply, or structured chunks
    /// that are only NONE or errors.
    async fn empty_reply(&mut self, req: &Request) -> Result<(), NbdError> {
        let mut error: Option<NbdError> = None;
        loop {
            let (flags, kind, plen) = match self.header(req).await? {
                ReplyHeader::Simple { error: 0, .. } => return Ok(()),
                ReplyHeader::Simple { error, .. } => return Err(command_error(req, error, String::new(), None)),
                ReplyHeader::Chunk { flags, kind, len, .. } => (flags, kind, len),
            };
            match kind {
                wire::REPLY_TYPE_NONE => none_chunk(flags, plen)?,
                k if k & wire::REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(req, k, plen).await?;
                    error.get_or_insert(e);
                }
                k => return Err(unexpected_chunk(k, command_name(req.command))),
            }
            if flags & wire::REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// `NBD_CMD_DISC` (no reply), then closes our side.
    pub async fn disconnect(&mut self) -> Result<(), NbdError> {
        self.send(wire::CMD_DISC, 0, 0).await?;
        self.stream
            .shutdown()
            .await
            .map_err(|e| NbdError::io("closing the connection", e))
    }

    async fn send(&mut self, command: u16, offset: u64, len: u32) -> Result<Request, NbdError> {
        self.send_with(command, offset, len, &[]).await
    }

    /// Sends a request header followed by `payload` (a WRITE's data).
    async fn send_with(&mut self, command: u16, offset: u64, len: u32, payload: &[u8]) -> Result<Request, NbdError> {
        let req = Request {
            flags: 0,
            command,
            cookie: self.next_cookie,
            offset,
            len,
        };
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let during = "sending a request";
        self.stream
            .write_all(&req.encode())
            .await
            .map_err(|e| NbdError::io(during, e))?;
        if !payload.is_empty() {
            self.stream
                .write_all(payload)
                .await
                .map_err(|e| NbdError::io(during, e))?;
        }
        self.stream.flush().await.map_err(|e| NbdError::io(during, e))?;
        Ok(req)
    }

    /// Reads the next reply header, which must belong to `req`.
    async fn header(&mut self, req: &Request) -> Result<ReplyHeader, NbdError> {
        let during = "waiting for a reply";
        let mut m = [0u8; 4];
        self.read_exact(&mut m, during).await?;
        let magic = u32::from_be_bytes(m);
        let mut rest = [0u8; wire::STRUCTURED_REPLY_LEN - 4];
        let rest = &mut rest[..wire::reply_header_rest(magic)?];
        self.read_exact(rest, during).await?;
        let h = wire::parse_reply_header(magic, rest)?;
        if h.cookie() != req.cookie {
            return Err(NbdError::Protocol(format!(
                "reply for cookie {} while request {} is the only one in flight",
                h.cookie(),
                req.cookie
            )));
        }
        if let ReplyHeader::Chunk { .. } = h {
            if !self.structured {
                return Err(NbdError::Protocol("a structured reply that was not negotiated".into()));
            }
        }
        Ok(h)
    }

    async fn payload(&mut self, len: u32, during: &str) -> Result<Vec<u8>, NbdError> {
        if len > MAX_CHUNK_PAYLOAD {
            return Err(NbdError::Protocol(format!("a reply chunk of {len} bytes")));
        }
        let mut p = vec![0u8; len as usize];
        self.read_exact(&mut p, during).await?;
        Ok(p)
    }

    async fn error_chunk(&mut self, req: &Request, kind: u16, len: u32) -> Result<NbdError, NbdError> {
        let p = self.payload(len, "reading an error chunk").await?;
        let e = wire::parse_error_chunk(kind, &p)?;
        if e.error == 0 {
            return Err(NbdError::Protocol("an error chunk with error value 0".into()));
        }
        Ok(command_error(req, e.error, e.message, e.offset))
    }

    async fn read_exact(&mut self, buf: &mut [u8], during: &str) -> Result<(), NbdError> {
        self.stream
            .read_exact(buf)
            .await
            .map(|_| ())
            .map_err(|e| NbdError::io(during, e))
    }
}

fn command_name(command: u16) -> &'static str {
    match command {
        wire::CMD_READ => "READ",
        wire::CMD_BLOCK_STATUS => "BLOCK_STATUS",
        wire::CMD_WRITE => "WRITE",
        wire::CMD_FLUSH => "FLUSH",
        wire::CMD_WRITE_ZEROES => "WRITE_ZEROES",
        _ => "a command",
    }
}

fn command_error(req: &Request, error: u32, message: String, error_offset: Option<u64>) -> NbdError {
    NbdError::Command {
        command: command_name(req.command),
        offset: req.offset,
        len: u64::from(req.len),
        errno: NbdErrno::from_wire(error),
        message,
        error_offset,
    }
}

fn unexpected_chunk(kind: u16, command: &str) -> NbdError {
    NbdError::Protocol(format!("chunk type {kind} in the reply to {command}"))
}

fn none_chunk(flags: u16, len: u32) -> Result<(), NbdError> {
    if flags & wire::REPLY_FLAG_DONE == 0 || len != 0 {
        return Err(NbdError::Protocol(
            "an NBD_REPLY_TYPE_NONE chunk that is not a bare final chunk".into(),
        ));
    }
    Ok(())
}

/// The part of the request buffer that a chunk at `at` of `len` bytes fills.
fn within(req: &Request, at: u64, len: u64, what: &str) -> Result<std::ops::Range<usize>, NbdError> {
    let end = u64::from(req.len);
    let start = at
        .checked_sub(req.offset)
        .filter(|s| s.checked_add(len).is_some_and(|e| e <= end));
    match start {
        Some(s) => Ok(s as usize..(s + len) as usize),
        None => Err(NbdError::Protocol(format!(
            "{what} chunk for {len} bytes at {at} is outside the request for {} bytes at {}",
            req.len, req.offset
        ))),
    }
}

/// A successful READ must have covered the request exactly once.
fn check_coverage(req: &Request, mut covered: Vec<(u64, u64)>) -> Result<(), NbdError> {
    covered.sort_unstable();
    let mut next = req.offset;
    for (at, len) in covered {
        if at != next {
            let what = if at < next { "overlapping chunks" } else { "a gap" };
            return Err(NbdError::Protocol(format!(
                "READ reply has {what} at offset {}",
                at.min(next)
            )));
        }
        next = at + len;
    }
    if next != req.offset + u64::from(req.len) {
        return Err(NbdError::Protocol(format!(
            "READ reply ended at offset {next}, the request at {}",
            req.offset + u64::from(req.len)
        )));
    }
    Ok(())
}
