//! Dirty bitmaps and negotiation errors against the real qemu-nbd (QEMU 7.2).

mod common;

use common::*;
use corral_nbd::{dirty_bitmap_context, Extent, NbdError, STATE_DIRTY};

const SIZE: u64 = 5 * GIB;

/// Writes before the bitmap exists (not dirty) and after (dirty), some past 4 GiB so the
/// whole-export loop needs several block-status requests and 64-bit offsets.
fn image() -> Image {
    let img = Image::create(SIZE);
    img.write(0xab, 0, 64 * KIB).write(0xcd, MIB, 128 * KIB);
    img.add_bitmap("bm0");
    img.write(0x22, MIB + 4 * KIB, 4 * KIB)
        .write(0x33, 3 * MIB + 100, 200_000)
        .write(0x44, 4 * GIB + 128 * KIB, 64 * KIB);
    img
}

fn dirty(offset: u64, length: u64) -> Extent {
    Extent {
        offset,
        length,
        flags: STATE_DIRTY,
    }
}

#[tokio::test]
async fn dirty_extents_are_exactly_the_clusters_written_after_the_bitmap() {
    let img = image();
    let nbd = QemuNbd::start(&img, &["--bitmap=bm0"]);
    bounded(async {
        let mut c = nbd.connect(&opts().dirty_bitmap("bm0")).await.unwrap();
        let ctx = dirty_bitmap_context("bm0");
        assert_eq!(ctx, "qemu:dirty-bitmap:bm0");
        let id = c.context_id(&ctx).expect("bitmap context selected");
        assert_ne!(
            Some(id),
            c.context_id(corral_nbd::BASE_ALLOCATION),
            "distinct context ids"
        );
        assert_eq!(c.size(), SIZE);

        // Granularity is the 64 KiB cluster: 3M+100 .. 3M+200100 dirties clusters 48..=51.
        let want = vec![
            dirty(MIB, 64 * KIB),
            dirty(3 * MIB, 256 * KIB),
            dirty(4 * GIB + 128 * KIB, 64 * KIB),
        ];
        assert_eq!(c.dirty_extents("bm0").await.unwrap(), want);

        // The full map alternates clean and dirty and covers the export exactly.
        let map = c.extents(&ctx).await.unwrap();
        assert_eq!(map.first().map(|e| (e.offset, e.is_dirty())), Some((0, false)));
        assert_eq!(map.last().map(|e| e.end()), Some(SIZE));
        assert_eq!(map.iter().filter(|e| e.is_dirty()).count(), 3);
        assert!(map
            .windows(2)
            .all(|w| w[0].end() == w[1].offset && w[0].flags != w[1].flags));

        // What a backup then reads from the dirty extents.
        let cluster = c.read(MIB, 64 * KIB as usize).await.unwrap();
        let mut want = vec![0xcdu8; 64 * KIB as usize];
        want[4096..8192].fill(0x22);
        assert_eq!(cluster, want);
        let far = c.read(4 * GIB + 128 * KIB - 1, 2).await.unwrap();
        assert_eq!(far, [0, 0x44]);
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn both_contexts_answer_one_block_status_window() {
    let img = image();
    let nbd = QemuNbd::start(&img, &["--bitmap=bm0"]);
    bounded(async {
        let mut c = nbd.connect(&opts().dirty_bitmap("bm0")).await.unwrap();
        // [960K, 1216K): clean data, dirty data, clean data, clean hole.
        let (start, len) = (MIB - 64 * KIB, 256 * KIB);
        let bm = c.block_status(start, len, &dirty_bitmap_context("bm0")).await.unwrap();
        let e = |offset, length, flags| Extent { offset, length, flags };
        assert_eq!(
            bm,
            [
                e(start, 64 * KIB, 0),
                dirty(MIB, 64 * KIB),
                e(MIB + 64 * KIB, 128 * KIB, 0)
            ]
        );
        let alloc = c.block_status(start, len, corral_nbd::BASE_ALLOCATION).await.unwrap();
        assert_eq!(
            alloc,
            [
                e(start, 64 * KIB, 3),
                e(MIB, 128 * KIB, 0),
                e(MIB + 128 * KIB, 64 * KIB, 3)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_export_name_is_a_clear_error() {
    let img = image();
    let nbd = QemuNbd::start(&img, &["--export-name=disk0"]);
    bounded(async {
        // The right name works...
        let c = nbd.connect(&corral_nbd::ConnectOptions::new("disk0")).await.unwrap();
        assert_eq!(c.size(), SIZE);
        drop(c);
        // ...a wrong one says so, with and without metadata contexts (QEMU refuses it in
        // SET_META_CONTEXT or in GO).
        for opts in [
            corral_nbd::ConnectOptions::new("disk1"),
            corral_nbd::ConnectOptions::new("disk1").without_meta_contexts(),
        ] {
            let err = nbd.connect(&opts).await.unwrap_err();
            match &err {
                NbdError::UnknownExport { name, .. } => assert_eq!(name, "disk1"),
                other => panic!("expected UnknownExport, got {other:?}"),
            }
            let text = err.to_string();
            assert!(text.contains("no export named \"disk1\""), "{text}");
            assert!(text.contains("qemu-nbd -x"), "{text}");
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_bitmap_is_a_clear_error() {
    let img = image();
    for (server_args, bitmap) in [
        // The bitmap exists in the image but is not exported.
        (&[][..], "bm0"),
        // Another bitmap is exported; this one does not exist.
        (&["--bitmap=bm0"][..], "nosuch"),
    ] {
        let nbd = QemuNbd::start(&img, server_args);
        bounded(async {
            let err = nbd.connect(&opts().dirty_bitmap(bitmap)).await.unwrap_err();
            match &err {
                NbdError::ContextNotSelected { name } => assert_eq!(name, &dirty_bitmap_context(bitmap)),
                other => panic!("expected ContextNotSelected, got {other:?}"),
            }
            let text = err.to_string();
            assert!(text.contains(&format!("qemu-nbd --bitmap={bitmap}")), "{text}");
        })
        .await;
        drop(nbd);
    }
}

#[tokio::test]
async fn block_status_on_a_context_not_negotiated_is_refused() {
    let img = image();
    let nbd = QemuNbd::start(&img, &["--bitmap=bm0"]);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        let err = c.dirty_extents("bm0").await.unwrap_err();
        assert!(matches!(err, NbdError::ContextNotNegotiated { .. }), "{err:?}");
        // Refused locally: the connection still works.
        assert_eq!(c.read(0, 2).await.unwrap(), [0xab, 0xab]);
    })
    .await;
}
