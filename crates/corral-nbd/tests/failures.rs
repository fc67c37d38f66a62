//! A qemu-nbd that dies or freezes under the client: errors, never hangs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corral_nbd::NbdError;
use nix::sys::signal::Signal;

#[tokio::test]
async fn server_killed_mid_transfer_is_an_error_not_a_hang() {
    // Data everywhere, so each 32 MiB request takes real time to send.
    let size = 256 * MIB;
    let img = Image::create(size);
    img.write(0x5a, 0, size);
    let nbd = QemuNbd::start(&img, &[]);
    let mut c = nbd.connect(&opts()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut reads = 0u64;
        let mut buf = vec![0u8; 32 * MIB as usize];
        loop {
            let offset = (reads * 32 * MIB) % size;
            match c.read_into(offset, &mut buf).await {
                Ok(()) => {
                    assert!(buf.iter().all(|&b| b == 0x5a), "read {reads} returned wrong bytes");
                    reads += 1;
                }
                Err(e) => return (reads, e, c),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nbd.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let (reads, err, mut c) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the client hung after qemu-nbd was killed")
        .unwrap();
    assert!(reads > 0, "no read finished before the kill: the test proved nothing");
    assert!(killed.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, NbdError::Disconnected { .. }), "{err:?}");
    assert!(
        err.to_string().contains("the process serving the export ended"),
        "{err}"
    );
    // Later calls fail at once instead of reading garbage from a dead stream.
    let again = c.read(0, 512).await.unwrap_err();
    assert!(matches!(again, NbdError::Broken(_)), "{again:?}");
}

#[tokio::test]
async fn frozen_server_times_out() {
    let img = Image::create(16 * MIB);
    img.write(0x01, 0, MIB);
    let nbd = QemuNbd::start(&img, &[]);
    let opts = opts().timeout(Some(Duration::from_millis(500)));
    let mut c = nbd.connect(&opts).await.unwrap();
    assert_eq!(c.read(0, 4).await.unwrap(), [1; 4]);
    // SIGSTOP: the socket stays open but nothing answers.
    nbd.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let err = bounded(c.read(0, MIB as usize)).await.unwrap_err();
    assert!(matches!(err, NbdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(err.to_string().contains("did not answer within 500ms"), "{err}");
    nbd.signal(Signal::SIGCONT);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let err = corral_nbd::NbdClient::connect_unix(&sock, &opts()).await.unwrap_err();
    assert!(matches!(err, NbdError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}
