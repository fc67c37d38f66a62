//! Connection lifecycle: connect_retry, closing, dropping.

mod common;

use std::time::{Duration, Instant};

use common::{socket_path, Qemu, MACHINE_NONE};
use corral_qmp::{Qmp, QmpError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::broadcast::error::RecvError;

const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn quit_closes_the_connection() {
    let mut qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let other = qmp.clone();
    assert!(!qmp.is_closed());

    // QEMU answers `quit` and then exits.
    qmp.execute("quit", None).await.unwrap();
    tokio::time::timeout(CLOSE_WAIT, other.closed())
        .await
        .expect("closed() did not resolve after quit");
    assert!(qmp.is_closed());
    // Resolves at once when already closed.
    tokio::time::timeout(Duration::from_millis(100), qmp.closed())
        .await
        .expect("closed() on a closed connection");

    match qmp.execute("query-status", None).await {
        Err(QmpError::Disconnected) | Err(QmpError::Io(_)) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let status = qemu.wait_exit(CLOSE_WAIT).expect("QEMU did not exit");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn pending_call_fails_when_qemu_dies() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let mut events = qmp.events();
    let pid = Pid::from_raw(qemu.pid());

    // Freeze QEMU so the command stays unanswered, then kill it.
    kill(pid, Signal::SIGSTOP).unwrap();
    let call = tokio::spawn({
        let qmp = qmp.clone();
        async move { qmp.execute("query-status", None).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "a frozen QEMU answered?");
    kill(pid, Signal::SIGKILL).unwrap();

    let result = tokio::time::timeout(CLOSE_WAIT, call)
        .await
        .expect("pending call not woken")
        .unwrap();
    assert!(
        matches!(result, Err(QmpError::Disconnected)),
        "expected Disconnected, got {result:?}"
    );
    assert!(qmp.is_closed());
    // Event receivers are not closed while a handle lives, but nothing comes.
    assert!(matches!(
        events.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn connect_retry_waits_for_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_path(dir.path());
    let connecting = tokio::spawn(Qmp::connect_retry(sock, Duration::from_secs(15)));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connecting.is_finished(), "connected before QEMU started?");
    let qemu = Qemu::start_in(dir, MACHINE_NONE);

    let qmp = connecting.await.unwrap().expect("connect_retry failed");
    assert!(qmp.version().major >= 7);
    qmp.execute("query-status", None).await.unwrap();
    drop(qemu);
}

#[tokio::test]
async fn connect_retry_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = Qmp::connect_retry(dir.path().join("never.sock"), Duration::from_millis(500))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        QmpError::Timeout(msg) => assert!(msg.contains("never.sock"), "{msg}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn connect_retry_times_out_when_socket_is_busy() {
    // QEMU serves one QMP client at a time; a second one never gets a
    // greeting, so connect_retry must give up rather than hang.
    let qemu = Qemu::start(MACHINE_NONE);
    let first = qemu.connect().await;
    let err = Qmp::connect_retry(&qemu.sock, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Timeout(_)), "{err:?}");
    first.execute("query-status", None).await.unwrap();
}

#[tokio::test]
async fn dropping_last_handle_closes_socket() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let clone = qmp.clone();
    let mut events = qmp.events();
    drop(qmp);
    // A clone keeps the connection alive.
    clone.execute("query-status", None).await.unwrap();
    drop(clone);

    // The event stream ends...
    let end = tokio::time::timeout(CLOSE_WAIT, events.recv())
        .await
        .expect("event channel not closed after drop");
    assert!(matches!(end, Err(RecvError::Closed)), "{end:?}");
    // ...and QEMU is free to accept the next client (it serves only one).
    let again = Qmp::connect_retry(&qemu.sock, CLOSE_WAIT)
        .await
        .expect("socket not released by drop");
    again.execute("query-status", None).await.unwrap();
}
