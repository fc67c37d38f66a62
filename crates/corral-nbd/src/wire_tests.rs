//! Wire layout tests: the expected bytes are written out by hand from the protocol's
//! field tables, so an encoder and decoder that agree with each other but not with the
//! protocol still fail.

use super::*;

#[test]
fn magics_spell_their_ascii_names() {
    assert_eq!(&NBD_MAGIC.to_be_bytes(), b"NBDMAGIC");
    assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
}

#[test]
fn request_header_layout() {
    let r = Request {
        flags: 0x0008,
        command: CMD_BLOCK_STATUS,
        cookie: 0x0102_0304_0506_0708,
        offset: 0x1122_3344_5566_7788,
        len: 0x00aa_bbcc,
    };
    let expected: [u8; 28] = [
        0x25, 0x60, 0x95, 0x13, // magic
        0x00, 0x08, // command flags
        0x00, 0x07, // type: BLOCK_STATUS
        1, 2, 3, 4, 5, 6, 7, 8, // cookie
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // offset
        0x00, 0xaa, 0xbb, 0xcc, // length
    ];
    assert_eq!(r.encode(), expected);
}

#[test]
fn option_go_layout() {
    let data = encode_go("ab", &[INFO_EXPORT, INFO_BLOCK_SIZE]);
    assert_eq!(data, [0, 0, 0, 2, b'a', b'b', 0, 2, 0, 0, 0, 3]);
    let opt = encode_option(OPT_GO, &data);
    let mut expected = b"IHAVEOPT".to_vec();
    expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 12]);
    expected.extend_from_slice(&data);
    assert_eq!(opt, expected);
}

#[test]
fn set_meta_context_layout() {
    let data = encode_set_meta_context("", &["base:allocation".into(), "x:y".into()]);
    let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 15];
    expected.extend_from_slice(b"base:allocation");
    expected.extend_from_slice(&[0, 0, 0, 3]);
    expected.extend_from_slice(b"x:y");
    assert_eq!(data, expected);
}

#[test]
fn option_reply_header() {
    let mut b = [0u8; 20];
    b[0..8].copy_from_slice(&[0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
    b[8..12].copy_from_slice(&[0, 0, 0, 10]);
    b[12..16].copy_from_slice(&[0x80, 0, 0, 6]);
    b[16..20].copy_from_slice(&[0, 0, 1, 0]);
    let h = OptionReplyHeader::parse(&b).unwrap();
    assert_eq!(
        h,
        OptionReplyHeader {
            option: OPT_SET_META_CONTEXT,
            reply: REP_ERR_BIT | 6,
            len: 256
        }
    );
    assert_eq!(
        crate::error::RepError::from_wire(h.reply),
        crate::error::RepError::Unknown
    );
    b[0] = 0xff;
    assert!(matches!(OptionReplyHeader::parse(&b), Err(NbdError::Protocol(_))));
}

#[test]
fn info_replies() {
    let export = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        parse_info(&export).unwrap(),
        Info::Export {
            size: 1 << 32,
            flags: 0
        }
    );
    let export = [0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0x01, 0x03];
    assert_eq!(
        parse_info(&export).unwrap(),
        Info::Export {
            size: 0x40_0000,
            flags: 1 | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN
        }
    );
    let bs = [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0];
    assert_eq!(
        parse_info(&bs).unwrap(),
        Info::BlockSize {
            min: 1,
            preferred: 4096,
            max: 32 << 20
        }
    );
    assert_eq!(parse_info(&[0, 2, b'h', b'i']).unwrap(), Info::Other(2));
    assert!(parse_info(&bs[..13]).is_err(), "short block size info");
    assert!(parse_info(&[0]).is_err());
}

#[test]
fn meta_context_reply() {
    let mut b = vec![0, 0, 0, 7];
    b.extend_from_slice(b"qemu:dirty-bitmap:bm0");
    assert_eq!(
        parse_meta_context(&b).unwrap(),
        (7, "qemu:dirty-bitmap:bm0".to_string())
    );
    assert!(parse_meta_context(&[0, 0, 1]).is_err());
}

#[test]
fn simple_reply_header() {
    let rest = [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9];
    assert_eq!(reply_header_rest(0x6744_6698).unwrap(), 12);
    assert_eq!(
        parse_reply_header(SIMPLE_REPLY_MAGIC, &rest).unwrap(),
        ReplyHeader::Simple { error: 5, cookie: 9 }
    );
}

#[test]
fn structured_reply_header() {
    let rest = [0, 1, 0, 5, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 20];
    assert_eq!(reply_header_rest(0x668e_33ef).unwrap(), 16);
    let h = parse_reply_header(STRUCTURED_REPLY_MAGIC, &rest).unwrap();
    assert_eq!(
        h,
        ReplyHeader::Chunk {
            flags: REPLY_FLAG_DONE,
            kind: REPLY_TYPE_BLOCK_STATUS,
            cookie: 256,
            len: 20
        }
    );
    assert_eq!(h.cookie(), 256);
    assert!(reply_header_rest(0xdead_beef).is_err());
}

#[test]
fn offset_hole_chunk() {
    let b = [0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0];
    assert_eq!(parse_offset_hole(&b).unwrap(), (0x10_0000, 0x1_0000));
    assert!(parse_offset_hole(&b[..11]).is_err());
}

#[test]
fn error_chunks() {
    let mut b = vec![0, 0, 0, 5, 0, 3];
    b.extend_from_slice(b"bad");
    assert_eq!(
        parse_error_chunk(REPLY_TYPE_ERROR, &b).unwrap(),
        ErrorChunk {
            error: 5,
            message: "bad".into(),
            offset: None
        }
    );
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 0]);
    assert_eq!(
        parse_error_chunk(REPLY_TYPE_ERROR_OFFSET, &b).unwrap(),
        ErrorChunk {
            error: 5,
            message: "bad".into(),
            offset: Some(512)
        }
    );
    assert!(parse_error_chunk(REPLY_TYPE_ERROR, &b).is_err(), "stray offset bytes");
    // A newer error type we do not know: its error value still counts.
    let e = parse_error_chunk(0x8003, &b).unwrap();
    assert_eq!((e.error, e.offset), (5, None));
    // A message longer than the payload.
    assert!(parse_error_chunk(REPLY_TYPE_ERROR, &[0, 0, 0, 5, 0, 9, b'x']).is_err());
}

#[test]
fn block_status_chunk() {
    let b = [
        0, 0, 0, 2, // context id
        0, 1, 0, 0, 0, 0, 0, 0, // 64 KiB, data
        0, 0x0f, 0, 0, 0, 0, 0, 3, // 960 KiB, hole + zero
    ];
    assert_eq!(parse_block_status(&b).unwrap(), (2, vec![(0x1_0000, 0), (0xf_0000, 3)]));
    assert!(parse_block_status(&b[..19]).is_err());
    assert!(parse_block_status(&b[..3]).is_err());
}
