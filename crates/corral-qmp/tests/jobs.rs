//! `run_job` against real QEMU jobs (`blockdev-create` works under `-M none`).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{Qemu, MACHINE_NONE};
use corral_qmp::{ErrorClass, Qmp, QmpError};
use serde_json::json;

const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates an empty file and adds it as `file` node `node`.
async fn add_file_node(qmp: &Qmp, path: &Path, node: &str) {
    std::fs::File::create(path).unwrap();
    qmp.execute(
        "blockdev-add",
        Some(json!({"driver": "file", "node-name": node, "filename": path})),
    )
    .await
    .unwrap();
}

async fn job_ids(qmp: &Qmp) -> Vec<String> {
    qmp.query_jobs().await.unwrap().into_iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn blockdev_create_runs_to_completion_and_is_dismissed() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let img = qemu.dir.path().join("disk.qcow2");
    add_file_node(&qmp, &img, "img").await;

    let calls = AtomicUsize::new(0);
    let last = Mutex::new((0u64, 0u64));
    let progress = |cur: u64, total: u64| {
        calls.fetch_add(1, Ordering::SeqCst);
        *last.lock().unwrap() = (cur, total);
    };
    let args = json!({
        "job-id": "j1",
        "options": {"driver": "qcow2", "file": "img", "size": 67108864}
    });
    tokio::time::timeout(JOB_TIMEOUT, qmp.run_job("blockdev-create", args, "j1", Some(&progress)))
        .await
        .expect("job did not finish")
        .expect("blockdev-create failed");

    assert!(!job_ids(&qmp).await.contains(&"j1".to_string()), "j1 was not dismissed");
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes.starts_with(b"QFI\xfb"), "no qcow2 magic in {img:?}");
    // The qcow2 header's size field (big endian at offset 24) is ours.
    let size = u64::from_be_bytes(bytes[24..32].try_into().unwrap());
    assert_eq!(size, 67108864);

    assert!(calls.load(Ordering::SeqCst) >= 1, "progress never reported");
    let (cur, total) = *last.lock().unwrap();
    assert_eq!(cur, total, "final progress should be complete");

    // The same id can be reused once dismissed (it would fail otherwise).
    let img2 = qemu.dir.path().join("disk2.qcow2");
    add_file_node(&qmp, &img2, "img2").await;
    let args = json!({"options": {"driver": "qcow2", "file": "img2", "size": 1048576}});
    qmp.run_job("blockdev-create", args, "j1", None)
        .await
        .expect("second blockdev-create (job-id added by run_job)");
    assert!(std::fs::read(&img2).unwrap().starts_with(b"QFI\xfb"));
}

#[tokio::test]
async fn failing_job_reports_error_and_is_dismissed() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    let img = qemu.dir.path().join("bad.qcow2");
    add_file_node(&qmp, &img, "img").await;

    let args = json!({
        "job-id": "bad",
        "options": {"driver": "qcow2", "file": "img", "size": 67108864, "cluster-size": 1234}
    });
    let err = tokio::time::timeout(JOB_TIMEOUT, qmp.run_job("blockdev-create", args, "bad", None))
        .await
        .expect("job did not finish")
        .unwrap_err();
    match &err {
        QmpError::JobFailed { job_id, message } => {
            assert_eq!(job_id, "bad");
            assert!(message.to_lowercase().contains("cluster size"), "{message}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("bad"), "{err}");
    assert!(job_ids(&qmp).await.is_empty(), "failed job not dismissed");
    assert!(!std::fs::read(&img).unwrap().starts_with(b"QFI\xfb"));
}

#[tokio::test]
async fn rejected_job_command_is_command_error() {
    let qemu = Qemu::start(MACHINE_NONE);
    let qmp = qemu.connect().await;
    // Missing the mandatory "options": QEMU refuses before creating a job.
    let err = tokio::time::timeout(
        JOB_TIMEOUT,
        qmp.run_job("blockdev-create", json!({"job-id": "j"}), "j", None),
    )
    .await
    .expect("run_job hung on a refused command")
    .unwrap_err();
    match err {
        QmpError::Command { class, command, .. } => {
            assert_eq!(class, ErrorClass::GenericError);
            assert_eq!(command, "blockdev-create");
        }
        other => panic!("expected Command error, got {other:?}"),
    }

    // A mismatched job-id is refused locally.
    let err = qmp
        .run_job("blockdev-create", json!({"job-id": "a"}), "b", None)
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
    assert!(job_ids(&qmp).await.is_empty());
}

/// Runs a QEMU tool (qemu-img/qemu-io from qemu-utils) and returns stdout.
fn tool(prog: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the first 64 KiB of `image` (ignoring its backing file) hold 0xab.
fn has_pattern(image: &Path) -> bool {
    let open = format!("driver=qcow2,file.filename={}", image.display());
    // -U: QEMU may still hold the image; -r: read-only.
    let out = std::process::Command::new("qemu-io")
        .args(["-U", "-r", "--image-opts", &open, "-c", "read -P 0xab 0 64k"])
        .output()
        .expect("run qemu-io");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("Pattern verification failed") {
        return false;
    }
    assert!(out.status.success(), "qemu-io: {out:?}");
    assert!(stdout.contains("read 65536/65536 bytes"), "{stdout}");
    true
}

#[tokio::test]
async fn active_commit_is_completed_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    let (base_s, top_s) = (base.to_str().unwrap(), top.to_str().unwrap());
    tool("qemu-img", &["create", "-q", "-f", "qcow2", base_s, "1M"]);
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", base_s, "-F", "qcow2", top_s],
    );
    tool("qemu-io", &["-f", "qcow2", "-c", "write -P 0xab 0 64k", top_s]);
    assert!(has_pattern(&top));
    assert!(!has_pattern(&base), "data in base before the commit");

    let mut qemu = Qemu::start_in(dir, MACHINE_NONE);
    let qmp = qemu.connect().await;
    qmp.execute(
        "blockdev-add",
        Some(json!({"driver": "qcow2", "node-name": "top",
                    "file": {"driver": "file", "filename": top_s}})),
    )
    .await
    .unwrap();

    // Committing the active layer goes through "ready"; run_job must send
    // job-complete or this never concludes.
    let mut events = qmp.events();
    let args = json!({"job-id": "c1", "device": "top", "auto-dismiss": false});
    tokio::time::timeout(JOB_TIMEOUT, qmp.run_job("block-commit", args, "c1", None))
        .await
        .expect("active commit never concluded")
        .expect("block-commit failed");
    let mut saw_ready = false;
    while let Ok(ev) = events.try_recv() {
        saw_ready |= ev.name == "BLOCK_JOB_READY" && ev.data["device"] == "c1";
    }
    assert!(saw_ready, "the job never became ready: not an active commit?");
    assert!(job_ids(&qmp).await.is_empty(), "c1 not dismissed");

    // Quit so QEMU flushes and closes the images, then look at the base.
    qmp.execute("quit", None).await.unwrap();
    qemu.wait_exit(Duration::from_secs(10)).expect("QEMU did not quit");
    assert!(has_pattern(&base), "data not committed to the base image");
}
