//! Passing file descriptors with SCM_RIGHTS (`getfd`, then e.g. `migrate`).

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::{Qemu, MACHINE_NONE};
use corral_qmp::{ErrorClass, QmpError};
use serde_json::json;

#[tokio::test]
async fn getfd_then_closefd() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let file = std::fs::File::create(qemu.dir.path().join("f")).unwrap();

    // Nothing named f1 exists yet.
    let err = qmp.execute("closefd", Some(json!({"fdname": "f1"}))).await.unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::GenericError), "{err:?}");

    // Without a descriptor attached, getfd is refused...
    let err = qmp.execute("getfd", Some(json!({"fdname": "f1"}))).await.unwrap_err();
    assert!(err.to_string().contains("SCM_RIGHTS"), "{err}");

    // ...with one, it is accepted and QEMU then knows the name.
    qmp.execute_with_fd("getfd", Some(json!({"fdname": "f1"})), file.as_fd())
        .await
        .unwrap();
    qmp.execute("closefd", Some(json!({"fdname": "f1"}))).await.unwrap();
    let err = qmp.execute("closefd", Some(json!({"fdname": "f1"}))).await.unwrap_err();
    assert!(matches!(err, QmpError::Command { .. }), "{err:?}");

    // QEMU got a duplicate: our own descriptor is still open and usable.
    use std::io::Write;
    (&file).write_all(b"still mine").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fds_go_with_their_own_commands_under_concurrency() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let qmp = qmp.clone();
        let path = qemu.dir.path().join(format!("f{i}"));
        tasks.push(tokio::spawn(async move {
            let file = std::fs::File::create(path).unwrap();
            let name = format!("fd{i}");
            qmp.execute_with_fd("getfd", Some(json!({"fdname": name})), file.as_fd())
                .await
                .unwrap();
            // Interleave plain commands with the fd-carrying ones.
            qmp.execute("query-status", None).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..20 {
        qmp.execute("closefd", Some(json!({"fdname": format!("fd{i}")})))
            .await
            .unwrap_or_else(|e| panic!("fd{i} did not arrive: {e}"));
    }
}

#[tokio::test]
async fn migrate_to_passed_fd() {
    let qemu = Qemu::start(&["-M", "none", "-S"]);
    let qmp = qemu.connect().await;
    let path = qemu.dir.path().join("state.bin");
    let file = std::fs::File::create(&path).unwrap();
    let mut rx = qmp.events();
    // QEMU only sends MIGRATION events with the "events" capability on.
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
    )
    .await
    .unwrap();

    qmp.execute_with_fd("getfd", Some(json!({"fdname": "mig"})), file.as_fd())
        .await
        .unwrap();
    drop(file);
    qmp.execute("migrate", Some(json!({"uri": "fd:mig"}))).await.unwrap();

    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ev = rx.recv().await.unwrap();
            if ev.name == "MIGRATION" {
                let status = ev.data["status"].as_str().unwrap().to_string();
                if status == "completed" || status == "failed" {
                    return status;
                }
            }
        }
    })
    .await
    .expect("migration did not finish");
    assert_eq!(done, "completed");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"QEVM"), "no migration stream magic in the file");
}
