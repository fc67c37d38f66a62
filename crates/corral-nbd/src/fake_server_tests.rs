//! The client against a scripted server over an in-memory pipe: the replies a real server
//! rarely or never sends (chunks out of order, errors, lies, silence, a death mid-chunk).

use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use crate::wire::{self, Request};
use crate::{ConnectOptions, Extent, NbdClient, NbdErrno, NbdError};

const BITMAP_CTX: &str = "qemu:dirty-bitmap:b";

/// The server end of the pipe, with helpers to speak the protocol by hand.
struct Fake {
    s: DuplexStream,
}

/// What the scripted server offers in negotiation.
struct Offer {
    size: u64,
    block: Option<(u32, u32, u32)>,
    contexts: Vec<(u32, &'static str)>,
    structured: bool,
}

impl Default for Offer {
    fn default() -> Self {
        Offer {
            size: 1 << 20,
            block: None,
            contexts: vec![(1, crate::BASE_ALLOCATION), (2, BITMAP_CTX)],
            structured: true,
        }
    }
}

impl Fake {
    async fn greet(&mut self, flags: u16) {
        self.s.write_all(b"NBDMAGICIHAVEOPT").await.unwrap();
        self.s.write_all(&flags.to_be_bytes()).await.unwrap();
    }

    async fn option(&mut self) -> (u32, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h[0..8], b"IHAVEOPT");
        let mut data = vec![0u8; wire::be32(&h[12..16]) as usize];
        self.s.read_exact(&mut data).await.unwrap();
        (wire::be32(&h[8..12]), data)
    }

    async fn reply(&mut self, option: u32, reply: u32, payload: &[u8]) {
        let mut b = wire::OPT_REPLY_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&reply.to_be_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        self.s.write_all(&b).await.unwrap();
    }

    /// A whole successful negotiation.
    async fn handshake(&mut self, offer: &Offer) {
        self.greet(wire::FLAG_FIXED_NEWSTYLE | wire::FLAG_NO_ZEROES).await;
        let mut cf = [0u8; 4];
        self.s.read_exact(&mut cf).await.unwrap();
        assert_eq!(u32::from_be_bytes(cf), 3, "client flags: fixed newstyle + no zeroes");
        loop {
            let (opt, _) = self.option().await;
            match opt {
                wire::OPT_STRUCTURED_REPLY if offer.structured => self.reply(opt, wire::REP_ACK, &[]).await,
                wire::OPT_STRUCTURED_REPLY => self.reply(opt, wire::REP_ERR_BIT | 1, &[]).await,
                wire::OPT_SET_META_CONTEXT => {
                    for (id, name) in &offer.contexts {
                        let mut p = id.to_be_bytes().to_vec();
                        p.extend_from_slice(name.as_bytes());
                        self.reply(opt, wire::REP_META_CONTEXT, &p).await;
                    }
                    self.reply(opt, wire::REP_ACK, &[]).await;
                }
                wire::OPT_GO => {
                    let mut p = vec![0, 0];
                    p.extend_from_slice(&offer.size.to_be_bytes());
                    p.extend_from_slice(&0x0103u16.to_be_bytes());
                    self.reply(opt, wire::REP_INFO, &p).await;
                    if let Some((min, pref, max)) = offer.block {
                        let mut p = vec![0, 3];
                        for v in [min, pref, max] {
                            p.extend_from_slice(&v.to_be_bytes());
                        }
                        self.reply(opt, wire::REP_INFO, &p).await;
                    }
                    self.reply(opt, wire::REP_ACK, &[]).await;
                    return;
                }
                other => panic!("unexpected option {other}"),
            }
        }
    }

    async fn request(&mut self) -> Request {
        let mut b = [0u8; 28];
        self.s.read_exact(&mut b).await.unwrap();
        assert_eq!(wire::be32(&b[0..4]), wire::REQUEST_MAGIC);
        Request {
            flags: wire::be16(&b[4..6]),
            command: wire::be16(&b[6..8]),
            cookie: wire::be64(&b[8..16]),
            offset: wire::be64(&b[16..24]),
            len: wire::be32(&b[24..28]),
        }
    }

    async fn chunk(&mut self, done: bool, kind: u16, cookie: u64, payload: &[u8]) {
        let mut b = wire::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&u16::from(done).to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        self.s.write_all(&b).await.unwrap();
    }

    async fn data(&mut self, done: bool, cookie: u64, offset: u64, data: &[u8]) {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(data);
        self.chunk(done, wire::REPLY_TYPE_OFFSET_DATA, cookie, &p).await;
    }

    async fn hole(&mut self, done: bool, cookie: u64, offset: u64, len: u32) {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        self.chunk(done, wire::REPLY_TYPE_OFFSET_HOLE, cookie, &p).await;
    }

    async fn status(&mut self, done: bool, cookie: u64, id: u32, descs: &[(u32, u32)]) {
        let mut p = id.to_be_bytes().to_vec();
        for (len, flags) in descs {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        self.chunk(done, wire::REPLY_TYPE_BLOCK_STATUS, cookie, &p).await;
    }
}

/// Starts `script` as the server and connects a client to it.
async fn pair<F, Fut>(offer: Offer, opts: ConnectOptions, script: F) -> (Result<NbdClient, NbdError>, JoinHandle<()>)
where
    F: FnOnce(Fake, Offer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client_end, server_end) = duplex(1 << 20);
    let server = tokio::spawn(script(Fake { s: server_end }, offer));
    let client = NbdClient::connect_stream(client_end, &opts).await;
    (client, server)
}

fn opts() -> ConnectOptions {
    ConnectOptions::new("")
        .dirty_bitmap("b")
        .timeout(Some(Duration::from_secs(5)))
}

#[tokio::test]
async fn negotiation_records_size_flags_block_size_and_context_ids() {
    let offer = Offer {
        block: Some((512, 4096, 1 << 16)),
        contexts: vec![(7, crate::BASE_ALLOCATION), (9, BITMAP_CTX)],
        ..Offer::default()
    };
    let (c, server) = pair(offer, opts(), |mut f, o| async move { f.handshake(&o).await }).await;
    let c = c.unwrap();
    server.await.unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert!(c.export().read_only() && c.export().can_multi_conn());
    assert_eq!((c.export().min_block(), c.export().max_request()), (512, 1 << 16));
    assert_eq!(c.context_id(crate::BASE_ALLOCATION), Some(7));
    assert_eq!(c.context_id(BITMAP_CTX), Some(9));
}

#[tokio::test]
async fn read_assembles_hole_and_data_chunks_in_any_order() {
    let (c, server) = pair(Offer::default(), opts(), |mut f, o| async move {
        f.handshake(&o).await;
        let r = f.request().await;
        assert_eq!((r.command, r.offset, r.len, r.flags), (wire::CMD_READ, 4096, 8192, 0));
        f.hole(false, r.cookie, 8192, 4096).await;
        f.data(true, r.cookie, 4096, &[0xab; 4096]).await;
    })
    .await;
    let mut c = c.unwrap();
    // Stale bytes in the caller's buffer must not survive in the hole.
    let mut buf = vec![0x55u8; 8192];
    c.read_into(4096, &mut buf).await.unwrap();
    assert_eq!(&buf[..4096], &[0xab; 4096][..]);
    assert_eq!(&buf[4096..], &[0u8; 4096][..]);
    server.await.unwrap();
}

#[tokio::test]
async fn reads_are_split_at_the_max_block_and_widened_to_the_min_block() {
    let offer = Offer {
        block: Some((512, 4096, 8192)),
        ..Offer::default()
    };
    let (c, server) = pair(offer, opts(), |mut f, o| async move {
        f.handshake(&o).await;
        let mut seen = Vec::new();
        for i in 0..4u8 {
            let r = f.request().await;
            seen.push((r.offset, r.len));
            let data: Vec<u8> = (0..r.len).map(|b| i.wrapping_mul(16).wrapping_add(b as u8)).collect();
            f.data(true, r.cookie, r.offset, &data).await;
        }
        assert_eq!(seen, [(0, 8192), (8192, 8192), (16384, 3584), (0, 512)]);
    })
    .await;
    let mut c = c.unwrap();
    let big = c.read(0, 19968).await.unwrap();
    assert_eq!(big.len(), 19968);
    assert_eq!((big[0], big[1], big[8192], big[16385]), (0, 1, 16, 33));
    // 50 bytes at 100: one aligned 512-byte request, bytes 100..150 of it.
    let small = c.read(100, 50).await.unwrap();
    assert_eq!(small, (0..50).map(|b| 48u8.wrapping_add(100 + b)).collect::<Vec<u8>>());
    server.await.unwrap();
}

#[tokio::test]
async fn error_chunk_fails_the_command_but_not_the_connection() {
    let (c, server) = pair(Offer::default(), opts(), |mut f, o| async move {
        f.handshake(&o).await;
        let r = f.request().await;
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&4u16.to_be_bytes());
        p.extend_from_slice(b"boom");
        p.extend_from_slice(&4106u64.to_be_bytes());
        f.data(false, r.cookie, 0, &[1; 4096]).await;
        f.chunk(false, wire::REPLY_TYPE_ERROR_OFFSET, r.cookie, &p).await;
        f.chunk(true, wire::REPLY_TYPE_NONE, r.cookie, &[]).await;
        let r = f.request().await;
        f.data(true, r.cookie, r.offset, &[7; 16]).await;
    })
    .await;
    let mut c = c.unwrap();
    match c.read(0, 8192).await {
        Err(NbdError::Command {
            command: "READ",
            errno: NbdErrno::Io,
            message,
            error_offset: Some(4106),
            ..
        }) => assert_eq!(message, "boom"),
        other => panic!("expected an EIO command error, got {other:?}"),
    }
    assert_eq!(c.read(64, 16).await.unwrap(), [7; 16]);
    server.await.unwrap();
}

#[tokio::test]
async fn server_dying_mid_chunk_is_disconnected_then_broken() {
    let (c, server) = pair(Offer::default(), opts(), |mut f, o| async move {
        f.handshake(&o).await;
        let r = f.request().await;
        let mut b = wire::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 1, 0, 1]);
        b.extend_from_slice(&r.cookie.to_be_bytes());
        b.extend_from_slice(&(8 + 4096u32).to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&[0xee; 100]);
        f.s.write_all(&b).await.unwrap();
        // `f` drops here: the stream closes in the middle of the data.
    })
    .await;
    let mut c = c.unwrap();
    let err = c.read(0, 4096).await.unwrap_err();
    assert!(matches!(err, NbdError::Disconnected { .. }), "{err:?}");
    assert!(err.to_string().contains("closed the connection"), "{err}");
    let again = c.read(0, 4096).await.unwrap_err();
    assert!(matches!(again, NbdError::Broken(_)), "{again:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn silent_server_times_out() {
    let opts = opts().timeout(Some(Duration::from_millis(200)));
    let (c, server) = pair(Offer::default(), opts, |mut f, o| async move {
        f.handshake(&o).await;
        let _ = f.request().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    let mut c = c.unwrap();
    let started = std::time::Instant::now();
    let err = c.read(0, 4096).await.unwrap_err();
    assert!(matches!(err, NbdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        c.block_status(0, 4096, BITMAP_CTX).await,
        Err(NbdError::Broken(_))
    ));
    server.abort();
}

#[tokio::test]
async fn lies_in_replies_are_protocol_errors() {
    // Each case: what the server sends in reply to a READ of 4096 bytes at 4096.
    for case in 0..4 {
        let (c, server) = pair(Offer::default(), opts(), move |mut f, o| async move {
            f.handshake(&o).await;
            let r = f.request().await;
            match case {
                // Data past the end of the request.
                0 => f.data(true, r.cookie, 6144, &[1; 4096]).await,
                // Another request's cookie.
                1 => f.data(true, r.cookie + 1, 4096, &[1; 4096]).await,
                // DONE with half the range missing.
                2 => f.data(true, r.cookie, 4096, &[1; 2048]).await,
                // The same half twice (covers 4096 bytes, but not the range).
                _ => {
                    f.data(false, r.cookie, 4096, &[1; 2048]).await;
                    f.hole(true, r.cookie, 4096, 2048).await;
                }
            }
        })
        .await;
        let mut c = c.unwrap();
        let err = c.read(4096, 4096).await.unwrap_err();
        assert!(matches!(err, NbdError::Protocol(_)), "case {case}: {err:?}");
        server.await.unwrap();
    }
}

#[tokio::test]
async fn block_status_clips_extents_and_asks_again_for_the_rest() {
    let (c, server) = pair(Offer::default(), opts(), |mut f, o| async move {
        f.handshake(&o).await;
        let r = f.request().await;
        assert_eq!((r.command, r.offset, r.len), (wire::CMD_BLOCK_STATUS, 0, 12288));
        f.status(false, r.cookie, 1, &[(12288, 0)]).await;
        // The bitmap answer covers only 8 KiB of the 12 KiB asked.
        f.status(true, r.cookie, 2, &[(4096, 0), (4096, 1)]).await;
        let r = f.request().await;
        assert_eq!((r.offset, r.len), (8192, 4096));
        // The last extent may reach past the request.
        f.status(false, r.cookie, 2, &[(65536, 1)]).await;
        f.status(true, r.cookie, 1, &[(4096, 3)]).await;
    })
    .await;
    let mut c = c.unwrap();
    let got = c.block_status(0, 12288, BITMAP_CTX).await.unwrap();
    let e = |offset, length, flags| Extent { offset, length, flags };
    assert_eq!(got, [e(0, 4096, 0), e(4096, 4096, 1), e(8192, 4096, 1)]);
    let err = c.block_status(0, 4096, "qemu:dirty-bitmap:other").await.unwrap_err();
    assert!(matches!(err, NbdError::ContextNotNegotiated { .. }), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn requests_outside_the_export_are_refused_locally() {
    let (c, server) = pair(Offer::default(), opts(), |mut f, o| async move {
        f.handshake(&o).await;
        // Nothing but the goodbye arrives.
        assert_eq!(f.request().await.command, wire::CMD_DISC);
    })
    .await;
    let mut c = c.unwrap();
    let err = c.read((1 << 20) - 10, 11).await.unwrap_err();
    assert!(matches!(err, NbdError::OutOfRange { size: 1048576, .. }), "{err:?}");
    let err = c.block_status(u64::MAX, 2, BITMAP_CTX).await.unwrap_err();
    assert!(matches!(err, NbdError::OutOfRange { .. }), "{err:?}");
    c.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn simple_replies_without_structured_reply_support() {
    let offer = Offer {
        structured: false,
        ..Offer::default()
    };
    let opts = ConnectOptions::new("").without_meta_contexts();
    let (c, server) = pair(offer, opts, |mut f, o| async move {
        f.handshake(&o).await;
        let r = f.request().await;
        let mut b = wire::SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&r.cookie.to_be_bytes());
        b.extend_from_slice(&[9; 32]);
        f.s.write_all(&b).await.unwrap();
        let r = f.request().await;
        assert_eq!(r.command, wire::CMD_DISC);
    })
    .await;
    let mut c = c.unwrap();
    assert_eq!(c.read(0, 32).await.unwrap(), [9; 32]);
    c.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn negotiation_failures_say_what_is_wrong() {
    // No fixed newstyle.
    let (c, _s) = pair(Offer::default(), opts(), |mut f, _| async move {
        f.greet(0).await;
        let _ = f.s.read(&mut [0u8; 4]).await;
    })
    .await;
    let err = c.unwrap_err();
    assert!(matches!(err, NbdError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("fixed newstyle"), "{err}");

    // Not an NBD server at all.
    let (c, _s) = pair(Offer::default(), opts(), |mut f, _| async move {
        f.s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
    })
    .await;
    assert!(matches!(c.unwrap_err(), NbdError::Protocol(_)));

    // Unknown export: QEMU already refuses it in SET_META_CONTEXT.
    let (c, _s) = pair(Offer::default(), ConnectOptions::new("nope"), |mut f, _| async move {
        f.greet(1).await;
        f.s.read_exact(&mut [0u8; 4]).await.unwrap();
        let (opt, _) = f.option().await;
        f.reply(opt, wire::REP_ACK, &[]).await;
        let (opt, data) = f.option().await;
        assert_eq!(&data[..8], &[0, 0, 0, 4, b'n', b'o', b'p', b'e']);
        f.reply(opt, wire::REP_ERR_BIT | 6, b"export 'nope' not present").await;
    })
    .await;
    let err = c.unwrap_err();
    assert!(
        matches!(&err, NbdError::UnknownExport { name, .. } if name == "nope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("export 'nope' not present"), "{err}");

    // A bitmap the server does not export: it is simply not in the reply.
    let offer = Offer {
        contexts: vec![(1, crate::BASE_ALLOCATION)],
        ..Offer::default()
    };
    let (c, _s) = pair(offer, opts(), |mut f, o| async move { f.handshake(&o).await }).await;
    let err = c.unwrap_err();
    assert!(
        matches!(&err, NbdError::ContextNotSelected { name } if name == BITMAP_CTX),
        "{err:?}"
    );
    assert!(err.to_string().contains("--bitmap=b"), "{err}");
}
