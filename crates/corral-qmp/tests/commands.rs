//! Commands against a real QEMU: greeting, replies, errors, concurrency.

mod common;

use common::{Qemu, MACHINE_NONE};
use corral_qmp::{ErrorClass, QmpError};
use serde::Deserialize;
use serde_json::{json, Value};

#[tokio::test]
async fn greeting_gives_version() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let v = qmp.version();
    assert!(v.major >= 7, "unexpected QEMU version {v:?}");

    // The greeting must agree with what query-version reports.
    let reply = qmp.execute("query-version", None).await.unwrap();
    assert_eq!(reply["qemu"]["major"], v.major);
    assert_eq!(reply["qemu"]["minor"], v.minor);
    assert_eq!(reply["qemu"]["micro"], v.micro);
    assert_eq!(reply["package"], v.package.as_str());
}

#[tokio::test]
async fn query_status_fields() {
    let qemu = Qemu::start(&["-M", "none", "-S"]);
    let qmp = qemu.connect().await;
    let status = qmp.execute("query-status", None).await.unwrap();
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(status["status"], "prelaunch", "{status}");

    // Arguments reach QEMU: qom-get answers about the property we name.
    let reply = qmp
        .execute("qom-get", Some(json!({"path": "/machine", "property": "type"})))
        .await
        .unwrap();
    assert_eq!(reply, "none-machine");
}

#[derive(Debug, Deserialize)]
struct Status {
    running: bool,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Triple {
    major: u32,
    minor: u32,
}

#[derive(Debug, Deserialize)]
struct Version {
    qemu: Triple,
    package: String,
}

#[tokio::test]
async fn execute_as_typed() {
    let qemu = Qemu::start(&["-M", "none", "-S"]);
    let qmp = qemu.connect().await;

    let status: Status = qmp.execute_as("query-status", None).await.unwrap();
    assert!(!status.running);
    assert_eq!(status.status, "prelaunch");

    let version: Version = qmp.execute_as("query-version", None).await.unwrap();
    assert_eq!(version.qemu.major, qmp.version().major);
    assert_eq!(version.qemu.minor, qmp.version().minor);
    assert_eq!(version.package, qmp.version().package);

    // A reply that does not fit the type is a protocol error, not a panic.
    let wrong = qmp.execute_as::<Vec<u32>>("query-status", None).await;
    match wrong {
        Err(QmpError::Protocol(msg)) => assert!(msg.contains("query-status"), "{msg}"),
        other => panic!("expected Protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_command_is_command_not_found() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let err = qmp.execute("query-foo", None).await.unwrap_err();
    match &err {
        QmpError::Command { class, desc, command } => {
            assert_eq!(*class, ErrorClass::CommandNotFound);
            assert_eq!(command, "query-foo");
            assert!(desc.contains("query-foo"), "{desc}");
        }
        other => panic!("expected Command error, got {other:?}"),
    }
    assert!(err.to_string().starts_with("QEMU refused query-foo: "), "{err}");
    // The connection is still fine afterwards.
    qmp.execute("query-status", None).await.unwrap();
}

#[tokio::test]
async fn bad_argument_is_generic_error() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;

    let err = qmp
        .execute("query-status", Some(json!({"bogus": 1})))
        .await
        .unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::GenericError), "{err:?}");
    assert!(err.to_string().contains("bogus"), "{err}");

    let err = qmp.execute("closefd", Some(json!({"fdname": 5}))).await.unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::GenericError), "{err:?}");
}

/// Checks that `reply` has the shape of `cmd`'s return value.
fn check_shape(cmd: &str, reply: &Result<Value, QmpError>) {
    match cmd {
        "query-name" => {
            let v = reply.as_ref().unwrap();
            assert_eq!(v, &json!({"name": "corral-test"}), "{cmd}: {v}");
        }
        "query-version" => {
            let v = reply.as_ref().unwrap();
            assert!(v["qemu"]["major"].as_u64().unwrap() >= 7, "{cmd}: {v}");
            assert!(v.get("package").is_some(), "{cmd}: {v}");
        }
        "query-status" => {
            let v = reply.as_ref().unwrap();
            assert_eq!(v["status"], "prelaunch", "{cmd}: {v}");
            assert_eq!(v["running"], false, "{cmd}: {v}");
        }
        "no-such-command" => match reply {
            Err(QmpError::Command { class, command, .. }) => {
                assert_eq!(*class, ErrorClass::CommandNotFound);
                assert_eq!(command, cmd);
            }
            other => panic!("{cmd}: {other:?}"),
        },
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_executes_get_their_own_replies() {
    let qemu = Qemu::start(&["-M", "none", "-S", "-name", "corral-test"]);
    let qmp = qemu.connect().await;
    const CMDS: [&str; 4] = ["query-name", "query-version", "query-status", "no-such-command"];

    let mut tasks = Vec::new();
    for i in 0..50 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            let cmd = CMDS[i % CMDS.len()];
            // Each task sends a few in a row to keep many requests in flight.
            for _ in 0..3 {
                let reply = qmp.execute(cmd, None).await;
                check_shape(cmd, &reply);
            }
            cmd
        }));
    }
    let mut counts = std::collections::HashMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("task panicked")).or_insert(0) += 1;
    }
    assert_eq!(counts.values().sum::<i32>(), 50);
    assert_eq!(counts.len(), CMDS.len());
}

#[tokio::test]
async fn connect_to_missing_socket_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = corral_qmp::Qmp::connect(dir.path().join("nope.sock"))
        .await
        .unwrap_err();
    match err {
        QmpError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Io, got {other:?}"),
    }
}
