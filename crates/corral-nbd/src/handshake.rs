//! Fixed newstyle negotiation: magics and flags, then the options
//! `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT` and `NBD_OPT_GO`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{NbdError, RepError};
use crate::wire::{self, Info, OptionReplyHeader};
use crate::{BlockSize, ConnectOptions, ExportInfo, MetaContext};

/// The magic an oldstyle server sends instead of `IHAVEOPT`.
const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;

/// The outcome of a successful negotiation: the connection is in transmission phase.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub export: ExportInfo,
    pub contexts: Vec<MetaContext>,
    pub structured: bool,
}

/// Runs the whole handshake on a freshly opened stream.
pub(crate) async fn negotiate<S>(s: &mut S, opts: &ConnectOptions) -> Result<Negotiated, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let flags = greeting(s).await?;
    let mut client_flags = wire::CLIENT_FLAG_FIXED_NEWSTYLE;
    if flags & wire::FLAG_NO_ZEROES != 0 {
        client_flags |= wire::CLIENT_FLAG_NO_ZEROES;
    }
    write_all(s, &client_flags.to_be_bytes(), "sending the client flags").await?;

    let result = options(s, opts).await;
    if let Err(e) = &result {
        // The stream is still in step after a refusal: end the session politely, as the
        // protocol asks, instead of vanishing mid-negotiation. Best effort: we are failing
        // anyway, and the server may close without acknowledging.
        if matches!(
            e,
            NbdError::UnknownExport { .. }
                | NbdError::ContextNotSelected { .. }
                | NbdError::OptionRefused { .. }
                | NbdError::Unsupported { .. }
        ) {
            let _ = send_option(s, wire::OPT_ABORT, &[]).await;
        }
    }
    result
}

/// The option haggling, once the greeting is done.
async fn options<S>(s: &mut S, opts: &ConnectOptions) -> Result<Negotiated, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let structured = structured_reply(s, opts).await?;
    let contexts = if opts.meta_contexts.is_empty() {
        Vec::new()
    } else {
        set_meta_context(s, opts).await?
    };
    let export = go(s, &opts.export_name).await?;
    tracing::debug!(?export, ?contexts, structured, "NBD negotiation done");
    Ok(Negotiated {
        export,
        contexts,
        structured,
    })
}

/// Reads the server's greeting and returns its handshake flags.
async fn greeting<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16, NbdError> {
    let during = "reading the server greeting";
    let magic = read_u64(s, during).await?;
    if magic != wire::NBD_MAGIC {
        return Err(NbdError::Protocol(format!(
            "the greeting starts with {magic:#018x}, not \"NBDMAGIC\""
        )));
    }
    match read_u64(s, during).await? {
        wire::IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return Err(NbdError::Unsupported {
                what: "newstyle negotiation (it speaks the oldstyle protocol)".into(),
                hint: "use a current qemu-nbd or nbd-server".into(),
            })
        }
        other => {
            return Err(NbdError::Protocol(format!(
                "the greeting's second magic is {other:#018x}, not \"IHAVEOPT\""
            )))
        }
    }
    let mut b = [0u8; 2];
    read_exact(s, &mut b, during).await?;
    let flags = u16::from_be_bytes(b);
    if flags & wire::FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Unsupported {
            what: "fixed newstyle negotiation".into(),
            hint: "the server is too old; use a current qemu-nbd or nbd-server".into(),
        });
    }
    Ok(flags)
}

/// Asks for structured replies. They are required for holes and block status; a server
/// without them is acceptable only if no metadata context was asked for.
async fn structured_reply<S>(s: &mut S, opts: &ConnectOptions) -> Result<bool, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_option(s, wire::OPT_STRUCTURED_REPLY, &[]).await?;
    let (h, payload) = read_option_reply(s, wire::OPT_STRUCTURED_REPLY).await?;
    match h.reply {
        wire::REP_ACK => Ok(true),
        r if r & wire::REP_ERR_BIT != 0 => match RepError::from_wire(r) {
            RepError::Unsup if opts.meta_contexts.is_empty() => Ok(false),
            RepError::Unsup => Err(NbdError::Unsupported {
                what: "structured replies (NBD_OPT_STRUCTURED_REPLY)".into(),
                hint: "they are needed for block status; connect without metadata contexts to only read".into(),
            }),
            reply => Err(refused("NBD_OPT_STRUCTURED_REPLY", reply, &payload)),
        },
        other => Err(unexpected_reply("NBD_OPT_STRUCTURED_REPLY", other)),
    }
}

/// Selects the requested metadata contexts and returns the ids the server gave them.
async fn set_meta_context<S>(s: &mut S, opts: &ConnectOptions) -> Result<Vec<MetaContext>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const OPT: &str = "NBD_OPT_SET_META_CONTEXT";
    let data = wire::encode_set_meta_context(&opts.export_name, &opts.meta_contexts);
    send_option(s, wire::OPT_SET_META_CONTEXT, &data).await?;
    let mut contexts: Vec<MetaContext> = Vec::new();
    loop {
        let (h, payload) = read_option_reply(s, wire::OPT_SET_META_CONTEXT).await?;
        match h.reply {
            wire::REP_META_CONTEXT => {
                let (id, name) = wire::parse_meta_context(&payload)?;
                if contexts.iter().any(|c| c.id == id) {
                    return Err(NbdError::Protocol(format!("meta context id {id} given twice")));
                }
                contexts.push(MetaContext { id, name });
            }
            wire::REP_ACK => break,
            r if r & wire::REP_ERR_BIT != 0 => {
                return Err(match RepError::from_wire(r) {
                    RepError::Unknown => unknown_export(&opts.export_name, &payload),
                    RepError::Unsup => NbdError::Unsupported {
                        what: "metadata contexts (NBD_OPT_SET_META_CONTEXT)".into(),
                        hint:
                            "block status and dirty bitmaps need them; connect without metadata contexts to only read"
                                .into(),
                    },
                    reply => refused(OPT, reply, &payload),
                })
            }
            other => return Err(unexpected_reply(OPT, other)),
        }
    }
    for wanted in &opts.meta_contexts {
        if !contexts.iter().any(|c| &c.name == wanted) {
            return Err(NbdError::ContextNotSelected { name: wanted.clone() });
        }
    }
    Ok(contexts)
}

/// Opens the export and reads its size, flags and block size limits.
async fn go<S>(s: &mut S, export_name: &str) -> Result<ExportInfo, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const OPT: &str = "NBD_OPT_GO";
    // Asking for NBD_INFO_BLOCK_SIZE promises to honour the minimum block size, which
    // `NbdClient` does (unaligned reads are widened).
    let data = wire::encode_go(export_name, &[wire::INFO_BLOCK_SIZE]);
    send_option(s, wire::OPT_GO, &data).await?;
    let mut export: Option<(u64, u16)> = None;
    let mut block_size = None;
    loop {
        let (h, payload) = read_option_reply(s, wire::OPT_GO).await?;
        match h.reply {
            wire::REP_INFO => match wire::parse_info(&payload)? {
                Info::Export { size, flags } => export = Some((size, flags)),
                Info::BlockSize { min, preferred, max } => block_size = Some(check_block_size(min, preferred, max)?),
                Info::Other(_) => {}
            },
            wire::REP_ACK => break,
            r if r & wire::REP_ERR_BIT != 0 => {
                return Err(match RepError::from_wire(r) {
                    RepError::Unknown => unknown_export(export_name, &payload),
                    reply => refused(OPT, reply, &payload),
                })
            }
            other => return Err(unexpected_reply(OPT, other)),
        }
    }
    let (size, flags) =
        export.ok_or_else(|| NbdError::Protocol("NBD_OPT_GO was acknowledged without NBD_INFO_EXPORT".into()))?;
    Ok(ExportInfo {
        size,
        flags,
        block_size,
    })
}

fn check_block_size(min: u32, preferred: u32, max: u32) -> Result<BlockSize, NbdError> {
    let ok = min.is_power_of_two()
        && min <= 64 * 1024
        && preferred.is_power_of_two()
        && preferred >= min
        && max >= min
        && (max == u32::MAX || max.is_multiple_of(min));
    if !ok {
        return Err(NbdError::Protocol(format!(
            "block sizes min {min}, preferred {preferred}, max {max} are inconsistent"
        )));
    }
    Ok(BlockSize { min, preferred, max })
}

fn refused(option: &'static str, reply: RepError, payload: &[u8]) -> NbdError {
    NbdError::OptionRefused {
        option,
        reply,
        message: String::from_utf8_lossy(payload).into_owned(),
    }
}

fn unknown_export(name: &str, payload: &[u8]) -> NbdError {
    NbdError::UnknownExport {
        name: name.to_string(),
        message: String::from_utf8_lossy(payload).into_owned(),
    }
}

fn unexpected_reply(option: &str, reply: u32) -> NbdError {
    NbdError::Protocol(format!("unexpected reply type {reply:#x} to {option}"))
}

async fn send_option<S: AsyncWrite + Unpin>(s: &mut S, option: u32, data: &[u8]) -> Result<(), NbdError> {
    let bytes = wire::encode_option(option, data);
    write_all(s, &bytes, "sending an option").await?;
    s.flush().await.map_err(|e| NbdError::io("sending an option", e))
}

/// Reads one option reply (header and payload) and checks it answers `option`.
async fn read_option_reply<S: AsyncRead + Unpin>(
    s: &mut S,
    option: u32,
) -> Result<(OptionReplyHeader, Vec<u8>), NbdError> {
    let during = "reading an option reply";
    let mut b = [0u8; OptionReplyHeader::LEN];
    read_exact(s, &mut b, during).await?;
    let h = OptionReplyHeader::parse(&b)?;
    if h.option != option {
        return Err(NbdError::Protocol(format!(
            "reply for option {} while negotiating option {option}",
            h.option
        )));
    }
    if h.len > wire::MAX_OPTION_REPLY {
        return Err(NbdError::Protocol(format!("option reply of {} bytes", h.len)));
    }
    let mut payload = vec![0u8; h.len as usize];
    read_exact(s, &mut payload, during).await?;
    Ok((h, payload))
}

async fn read_u64<S: AsyncRead + Unpin>(s: &mut S, during: &str) -> Result<u64, NbdError> {
    let mut b = [0u8; 8];
    read_exact(s, &mut b, during).await?;
    Ok(u64::from_be_bytes(b))
}

async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, b: &mut [u8], during: &str) -> Result<(), NbdError> {
    s.read_exact(b).await.map(|_| ()).map_err(|e| NbdError::io(during, e))
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8], during: &str) -> Result<(), NbdError> {
    s.write_all(b).await.map_err(|e| NbdError::io(during, e))
}
