//! Reads and allocation status against the real qemu-nbd (QEMU 7.2).

mod common;

use common::*;
use corral_nbd::{Extent, BASE_ALLOCATION, STATE_HOLE, STATE_ZERO};

/// The writes of the image most tests read: (pattern, offset, length).
const WRITES: &[(u8, u64, u64)] = &[
    (0xab, 0, 64 * KIB),
    (0xcd, MIB, 128 * KIB),
    // Unaligned, inside one cluster.
    (0x11, 2 * MIB + 512, 1000),
    // Across the 32 MiB boundary where a whole-export read is split.
    (0x77, 32 * MIB - 4 * KIB, 8 * KIB),
];
const SIZE: u64 = 80 * MIB;

fn image() -> Image {
    let img = Image::create(SIZE);
    for &(p, o, l) in WRITES {
        img.write(p, o, l);
    }
    img
}

#[tokio::test]
async fn export_size_block_sizes_and_flags() {
    let img = image();
    let nbd = QemuNbd::start(&img, &[]);
    bounded(async {
        let c = nbd.connect(&opts()).await.unwrap();
        assert_eq!(c.size(), SIZE);
        assert!(c.export().read_only(), "qemu-nbd --read-only sets NBD_FLAG_READ_ONLY");
        let bs = c.export().block_size.expect("QEMU 7.2 sends NBD_INFO_BLOCK_SIZE");
        assert_eq!((bs.min, bs.max), (1, 32 * MIB as u32), "{bs:?}");
        assert_eq!(c.export().max_request(), 32 * MIB as u32);
        assert_eq!(c.meta_contexts().len(), 1);
        assert_eq!(c.meta_contexts()[0].name, BASE_ALLOCATION);
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn whole_export_read_returns_exactly_the_written_bytes() {
    let img = image();
    let nbd = QemuNbd::start(&img, &[]);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        // 80 MiB: three requests (32 + 32 + 16 MiB), data and holes mixed.
        let all = c.read(0, SIZE as usize).await.unwrap();
        let want = expected(SIZE, WRITES);
        assert_eq!(first_difference(&all, &want), None, "(offset, got, want)");
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn small_reads_across_data_and_hole_boundaries() {
    let img = image();
    let nbd = QemuNbd::start(&img, &[]);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        let want = expected(SIZE, WRITES);
        for (offset, len) in [
            (64 * KIB - 10, 20),   // data → hole
            (MIB - 3, 7),          // hole → data
            (2 * MIB + 500, 1100), // hole → unaligned data → hole in one cluster
            (32 * MIB - 5, 10),    // across the split point
            (SIZE - 4096, 4096),   // the export's tail (a hole)
            (3 * MIB, 0),          // nothing at all
        ] {
            let got = c.read(offset, len).await.unwrap();
            let o = offset as usize;
            assert_eq!(got, want[o..o + len], "read of {len} bytes at {offset}");
        }
        // read_into overwrites whatever the buffer held, holes included.
        let mut buf = vec![0x55u8; 128 * KIB as usize];
        c.read_into(0, &mut buf).await.unwrap();
        assert_eq!(buf, want[..128 * KIB as usize]);
    })
    .await;
}

#[tokio::test]
async fn reads_past_the_end_are_refused() {
    let img = image();
    let nbd = QemuNbd::start(&img, &[]);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        let err = c.read(SIZE - 10, 11).await.unwrap_err();
        assert!(
            matches!(err, corral_nbd::NbdError::OutOfRange { size: SIZE, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("outside the export"), "{err}");
        // The connection is still good.
        assert_eq!(c.read(0, 4).await.unwrap(), [0xab; 4]);
    })
    .await;
}

#[tokio::test]
async fn base_allocation_marks_written_clusters_as_data() {
    let img = image();
    let nbd = QemuNbd::start(&img, &[]);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        let hole = STATE_HOLE | STATE_ZERO;
        let e = |offset, length, flags| Extent { offset, length, flags };
        // qcow2 allocates whole 64 KiB clusters: the unaligned write makes [2M, 2M+64K)
        // data, the write across 32 MiB makes [32M-64K, 32M+64K) data.
        let want = vec![
            e(0, 64 * KIB, 0),
            e(64 * KIB, MIB - 64 * KIB, hole),
            e(MIB, 128 * KIB, 0),
            e(MIB + 128 * KIB, MIB - 128 * KIB, hole),
            e(2 * MIB, 64 * KIB, 0),
            e(2 * MIB + 64 * KIB, 30 * MIB - 128 * KIB, hole),
            e(32 * MIB - 64 * KIB, 128 * KIB, 0),
            e(32 * MIB + 64 * KIB, SIZE - 32 * MIB - 64 * KIB, hole),
        ];
        assert_eq!(c.allocated_extents().await.unwrap(), want);
        // A window: clipped to exactly what was asked.
        let window = c.block_status(MIB - 4096, 8192, BASE_ALLOCATION).await.unwrap();
        assert_eq!(window, [e(MIB - 4096, 4096, hole), e(MIB, 4096, 0)]);
    })
    .await;
}

#[tokio::test]
async fn tcp_connection_reads_the_same_bytes() {
    let img = image();
    // A port the kernel just handed out; qemu-nbd binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nbd = QemuNbd::start_tcp(&img, port);
    bounded(async {
        let mut c = nbd.connect_tcp(port, &opts()).await;
        assert_eq!(c.size(), SIZE);
        let got = c.read(MIB - 8, 16).await.unwrap();
        assert_eq!(got, [&[0u8; 8][..], &[0xcd; 8][..]].concat());
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn writes_land_in_the_image_and_a_read_only_export_refuses_them() {
    let img = Image::create(8 * MIB);
    let nbd = QemuNbd::start_writable(&img);
    bounded(async {
        let mut c = nbd.connect(&opts()).await.unwrap();
        assert!(!c.export().read_only());
        let data: Vec<u8> = (0..3 * MIB as usize).map(|i| (i % 251) as u8).collect();
        c.write(MIB, &data).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(c.read(MIB, data.len()).await.unwrap(), data);
        // Zeroing a stretch in the middle, then writing it back.
        c.write_zeroes(2 * MIB, MIB).await.unwrap();
        assert!(c.read(2 * MIB, MIB as usize).await.unwrap().iter().all(|&b| b == 0));
        assert_eq!(c.read(MIB, MIB as usize).await.unwrap(), data[..MIB as usize]);
        c.write(2 * MIB, &data[MIB as usize..2 * MIB as usize]).await.unwrap();
        // Flushed, or qemu-nbd's qcow2 metadata cache may die with it below.
        c.flush().await.unwrap();
        // Past the end: refused before anything is sent, and the connection still works.
        assert!(c.write(7 * MIB, &data).await.is_err());
        assert_eq!(c.read(MIB, 16).await.unwrap(), data[..16]);
        c.close().await.unwrap();
    })
    .await;
    drop(nbd);
    // What qemu-io reads from the image file afterwards is what was written.
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x0 0 1M", "-c", "read -P 0x0 4M 4M"])
        .arg(&img.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed"), "{text}");
    let out_raw = img.dir.path().join("out.raw");
    let dumped = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .args([&img.path, &out_raw])
        .status()
        .unwrap();
    assert!(dumped.success());
    let raw = std::fs::read(&out_raw).unwrap();
    let want: Vec<u8> = (0..3 * MIB as usize).map(|i| (i % 251) as u8).collect();
    assert_eq!(first_difference(&raw[MIB as usize..4 * MIB as usize], &want), None);

    let ro = QemuNbd::start(&img, &[]);
    bounded(async {
        let mut c = ro.connect(&opts()).await.unwrap();
        let e = c.write(0, &[1u8; 512]).await.unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        c.close().await.unwrap();
    })
    .await;
}
