//! [`NbdClient`]: connecting, and the public read / block-status calls built on the
//! transmission layer (splitting, alignment, timeouts, whole-export loops).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufStream};

use crate::error::NbdError;
use crate::handshake;
use crate::transmission::Transmission;
use crate::{ConnectOptions, ExportInfo, Extent, MetaContext, BASE_ALLOCATION};

/// Block status is asked for in steps of this much (the request length is 32 bits).
const BLOCK_STATUS_STEP: u64 = 1 << 30;

/// Any byte stream an NBD connection can run over.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One connection to one NBD export, in transmission phase.
///
/// Calls take `&mut self`: one request is in flight at a time. A timeout, an I/O error or a
/// protocol violation leaves the stream in an unknown state, so the client then refuses
/// further calls with [`NbdError::Broken`]; a server-side error on one command
/// ([`NbdError::Command`]) does not.
pub struct NbdClient {
    tx: Transmission<BufStream<Box<dyn Transport>>>,
    export: ExportInfo,
    contexts: Vec<MetaContext>,
    timeout: Option<Duration>,
    broken: Option<String>,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("export", &self.export)
            .field("contexts", &self.contexts)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl NbdClient {
    /// Connects to the unix socket at `path` (e.g. `qemu-nbd --socket=PATH`).
    pub async fn connect_unix(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<NbdClient, NbdError> {
        let path = path.as_ref();
        let stream = within(opts.timeout, "connecting", async {
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|source| NbdError::Connect {
                    addr: path.display().to_string(),
                    source,
                })
        })
        .await?;
        NbdClient::connect_stream(stream, opts).await
    }

    /// Connects over TCP to `addr` (`host:port`; NBD's usual port is 10809).
    pub async fn connect_tcp(addr: &str, opts: &ConnectOptions) -> Result<NbdClient, NbdError> {
        let stream = within(opts.timeout, "connecting", async {
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| NbdError::Connect {
                    addr: addr.to_string(),
                    source,
                })
        })
        .await?;
        // Requests are small and latency-bound.
        let _ = stream.set_nodelay(true);
        NbdClient::connect_stream(stream, opts).await
    }

    /// Negotiates over an already open stream.
    pub async fn connect_stream<S>(stream: S, opts: &ConnectOptions) -> Result<NbdClient, NbdError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let boxed: Box<dyn Transport> = Box::new(stream);
        let mut stream = BufStream::new(boxed);
        let n = within(opts.timeout, "negotiating", handshake::negotiate(&mut stream, opts)).await?;
        Ok(NbdClient {
            tx: Transmission::new(stream, n.structured),
            export: n.export,
            contexts: n.contexts,
            timeout: opts.timeout,
            broken: None,
        })
    }

    /// Size, flags and block size limits of the export.
    pub fn export(&self) -> &ExportInfo {
        &self.export
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.export.size
    }

    /// The metadata contexts the server selected, with their ids.
    pub fn meta_contexts(&self) -> &[MetaContext] {
        &self.contexts
    }

    /// The id the server gave context `name`, if it was selected.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.contexts.iter().find(|c| c.name == name).map(|c| c.id)
    }

    /// Reads `len` bytes at `offset`; holes read as zeros.
    pub async fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, NbdError> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf).await?;
        Ok(buf)
    }

    /// Fills `buf` from `offset`. Reads larger than the server's maximum are split; reads not
    /// aligned to its minimum block size are widened and copied out.
    pub async fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.check_range("read", offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let min = u64::from(self.export.min_block());
        let end = offset + buf.len() as u64;
        if offset.is_multiple_of(min) && ((buf.len() as u64).is_multiple_of(min) || end == self.export.size) {
            return self.read_aligned(offset, buf).await;
        }
        let start = offset / min * min;
        let wide_end = end.div_ceil(min).saturating_mul(min).min(self.export.size);
        let mut wide = vec![0u8; (wide_end - start) as usize];
        self.read_aligned(start, &mut wide).await?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&wide[skip..skip + buf.len()]);
        Ok(())
    }

    async fn read_aligned(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let step = self.export.max_request() as usize;
        let mut at = offset;
        for chunk in buf.chunks_mut(step) {
            let len = chunk.len();
            let during = format!("reading {len} bytes at offset {at}");
            self.guard(&during)?;
            let res = within(self.timeout, &during, self.tx.read(at, chunk)).await;
            self.note(res)?;
            at += len as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (split at the server's maximum request size). The offset
    /// and length must be multiples of the export's minimum block size, except at its end.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        self.check_range("write", offset, data.len() as u64)?;
        if self.export.read_only() {
            return Err(NbdError::Unsupported {
                what: "writing".into(),
                hint: "the server exports this image read-only".into(),
            });
        }
        let min = u64::from(self.export.min_block());
        let end = offset + data.len() as u64;
        if !offset.is_multiple_of(min) || !(end.is_multiple_of(min) || end == self.export.size) {
            return Err(NbdError::OutOfRange {
                what: "write (not aligned to the export's block size)",
                offset,
                len: data.len() as u64,
                size: self.export.size,
            });
        }
        let step = self.export.max_request() as usize;
        let mut at = offset;
        for chunk in data.chunks(step) {
            let during = format!("writing {} bytes at offset {at}", chunk.len());
            self.guard(&during)?;
            let res = within(self.timeout, &during, self.tx.write(at, chunk)).await;
            self.note(res)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeros: `NBD_CMD_WRITE_ZEROES` where the server
    /// offers it (no data crosses the socket), zero-filled writes otherwise.
    pub async fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), NbdError> {
        self.check_range("write zeroes", offset, len)?;
        let step = u64::from(self.export.max_request());
        if self.export.flags & crate::wire::TFLAG_SEND_WRITE_ZEROES == 0 {
            let zeros = vec![0u8; step.min(len) as usize];
            let mut at = offset;
            while at < offset + len {
                let n = step.min(offset + len - at) as usize;
                self.write(at, &zeros[..n]).await?;
                at += n as u64;
            }
            return Ok(());
        }
        if self.export.read_only() {
            return Err(NbdError::Unsupported {
                what: "writing".into(),
                hint: "the server exports this image read-only".into(),
            });
        }
        let mut at = offset;
        while at < offset + len {
            let n = step.min(offset + len - at);
            let during = format!("writing {n} zero bytes at offset {at}");
            self.guard(&during)?;
            let res = within(self.timeout, &during, self.tx.write_zeroes(at, n as u32)).await;
            self.note(res)?;
            at += n;
        }
        Ok(())
    }

    /// Asks the server to make every write so far durable (`NBD_CMD_FLUSH`).
    pub async fn flush(&mut self) -> Result<(), NbdError> {
        self.guard("flushing")?;
        let res = within(self.timeout, "flushing", self.tx.flush()).await;
        self.note(res)
    }

    /// The status of `[offset, offset + len)` in metadata context `context` (a name given in
    /// [`ConnectOptions::meta_contexts`]): consecutive extents covering exactly that range,
    /// as the server reported them (asking again where a reply covered less).
    pub async fn block_status(&mut self, offset: u64, len: u64, context: &str) -> Result<Vec<Extent>, NbdError> {
        self.check_range("block status", offset, len)?;
        let id = self
            .context_id(context)
            .ok_or_else(|| NbdError::ContextNotNegotiated { name: context.into() })?;
        let min = u64::from(self.export.min_block());
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            // The request length is 32 bits; its end is block aligned (or the export's end).
            let stop = (at + (end - at).min(BLOCK_STATUS_STEP)).div_ceil(min) * min;
            let want = stop.min(self.export.size) - at;
            let during = format!("asking block status of {want} bytes at offset {at}");
            self.guard(&during)?;
            let res = within(self.timeout, &during, self.tx.block_status(at, want as u32)).await;
            let replies = self.note(res)?;
            let descs = match replies.into_iter().find(|(cid, _)| *cid == id) {
                Some((_, descs)) => descs,
                None => {
                    return Err(self.poison(NbdError::Protocol(format!(
                        "BLOCK_STATUS reply has no extents for context {context:?} (id {id})"
                    ))))
                }
            };
            for (length, flags) in descs {
                if at >= end {
                    break;
                }
                let length = u64::from(length).min(end - at);
                out.push(Extent {
                    offset: at,
                    length,
                    flags,
                });
                at += length;
            }
        }
        Ok(out)
    }

    /// The status of the whole export in `context`, neighbours with equal flags merged.
    pub async fn extents(&mut self, context: &str) -> Result<Vec<Extent>, NbdError> {
        let all = self.block_status(0, self.export.size, context).await?;
        Ok(merge(all))
    }

    /// `base:allocation` over the whole export: data extents have no flags; unallocated ones
    /// [`Extent::is_hole`], zero-reading ones [`Extent::is_zero`].
    pub async fn allocated_extents(&mut self) -> Result<Vec<Extent>, NbdError> {
        self.extents(BASE_ALLOCATION).await
    }

    /// The ranges dirty in QEMU's bitmap `bitmap`: what changed since the bitmap was enabled,
    /// i.e. what an incremental backup must read. Only the dirty extents are returned.
    pub async fn dirty_extents(&mut self, bitmap: &str) -> Result<Vec<Extent>, NbdError> {
        let all = self.extents(&crate::dirty_bitmap_context(bitmap)).await?;
        Ok(all.into_iter().filter(Extent::is_dirty).collect())
    }

    /// Says goodbye (`NBD_CMD_DISC`) and closes the connection.
    pub async fn close(mut self) -> Result<(), NbdError> {
        if self.broken.is_some() {
            return Ok(());
        }
        within(self.timeout, "disconnecting", self.tx.disconnect()).await
    }

    fn check_range(&self, what: &'static str, offset: u64, len: u64) -> Result<(), NbdError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.export.size => Ok(()),
            _ => Err(NbdError::OutOfRange {
                what,
                offset,
                len,
                size: self.export.size,
            }),
        }
    }

    fn guard(&self, during: &str) -> Result<(), NbdError> {
        match &self.broken {
            Some(why) => Err(NbdError::Broken(format!("{why}; then {during}"))),
            None => Ok(()),
        }
    }

    /// Marks the connection unusable if `res` failed in a way that leaves the stream out of
    /// step.
    fn note<T>(&mut self, res: Result<T, NbdError>) -> Result<T, NbdError> {
        res.map_err(|e| match e {
            NbdError::Command { .. } => e,
            e => self.poison(e),
        })
    }

    fn poison(&mut self, e: NbdError) -> NbdError {
        self.broken.get_or_insert_with(|| e.to_string());
        e
    }
}

/// Runs `fut` with the optional timeout.
async fn within<T>(
    timeout: Option<Duration>,
    during: &str,
    fut: impl Future<Output = Result<T, NbdError>>,
) -> Result<T, NbdError> {
    match timeout {
        None => fut.await,
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
            Err(NbdError::Timeout {
                during: during.to_string(),
                timeout: t,
            })
        }),
    }
}

/// Joins neighbouring extents with the same flags.
fn merge(extents: Vec<Extent>) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        match out.last_mut() {
            Some(last) if last.end() == e.offset && last.flags == e.flags => last.length += e.length,
            _ => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_joins_only_equal_neighbours() {
        let e = |offset, length, flags| Extent { offset, length, flags };
        assert_eq!(
            merge(vec![e(0, 4, 0), e(4, 4, 0), e(8, 4, 3), e(12, 4, 0), e(16, 1, 0)]),
            vec![e(0, 8, 0), e(8, 4, 3), e(12, 5, 0)]
        );
        assert!(merge(vec![]).is_empty());
    }
}
