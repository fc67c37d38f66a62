//! Point-in-time NBD exports of a running VM (the live backup read path), against real QEMU.
//! The VM boots no guest (its BIOS finds an empty disk); guest writes are made through QEMU's
//! block layer with the `qemu-io` monitor command on the second monitor, exactly where a
//! guest's writes enter.

use std::path::Path;
use std::process::Command;

use corral_engine::engine::fleece::FleeceRequest;
use corral_engine::{CreateOptions, Engine, HostConfig};
use corral_qmp::Qmp;
use corral_types::{Accel, ByteSize, DisplayMode, NetworkMode, VmName};
use serde_json::json;

/// Kills every QEMU started under the test's directory when the test ends, even by a panic.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("{}/run/vms/", self.0.display())])
            .status();
    }
}

fn engine(dir: &Path) -> Engine {
    let cfg = HostConfig::parse(&format!(
        "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n[qemu]\naccel = \"tcg\"\n",
        dir.display()
    ))
    .unwrap();
    Engine::open(cfg).unwrap()
}

/// A write as the guest would make it: through the device's block backend.
async fn guest_write(status: &Qmp, pattern: u8, offset: u64, len: u64) {
    // virtio-blk keeps its block backend on the inner `virtio-backend` device.
    let cmd = format!("qemu-io -d /machine/peripheral/disk0/virtio-backend \"write -P {pattern} {offset} {len}\"");
    let out = status
        .execute("human-monitor-command", Some(json!({"command-line": cmd})))
        .await
        .unwrap();
    let text = out.as_str().unwrap_or("");
    assert!(!text.to_lowercase().contains("error"), "{cmd}: {text}");
}

/// Whether the NBD export reads `pattern` over the range (through qemu-io, a real client).
fn export_has(socket: &Path, export: &str, pattern: u8, offset: u64, len: u64) -> bool {
    let uri = format!("nbd+unix:///{export}?socket={}", socket.display());
    let out = Command::new("qemu-io")
        .args([
            "-r",
            "-f",
            "raw",
            &uri,
            "-c",
            &format!("read -P {pattern} {offset} {len}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    out.status.success() && !text.contains("Pattern verification failed") && !text.contains("error")
}

/// Named dirty bitmaps on any node (during an export a filter node sits above the disk's
/// node, so the device's own entry does not show them).
async fn bitmaps(status: &Qmp) -> Vec<(String, bool)> {
    let nodes = status
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .unwrap();
    let mut out: Vec<(String, bool)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["dirty-bitmaps"].as_array().cloned().unwrap_or_default())
        // The backup job keeps an unnamed bitmap of its own: only named ones are corral's.
        .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["recording"].as_bool().unwrap())))
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn bitmap_count(status: &Qmp, name: &str) -> u64 {
    let nodes = status
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["dirty-bitmaps"].as_array().cloned().unwrap_or_default())
        .find(|m| m["name"] == name)
        .and_then(|m| m["count"].as_u64())
        .unwrap()
}

/// A request for disk0: read since `since` (or in full), start bitmap `new`.
fn req(since: Option<&str>, new: &str) -> FleeceRequest {
    FleeceRequest {
        disk: "disk0".into(),
        since_bitmap: since.map(str::to_string),
        new_bitmap: new.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn point_in_time_export_with_bitmap_handover() {
    let dir = tempfile::Builder::new().prefix("fl").tempdir_in("/tmp").unwrap();
    let _guard = KillOnDrop(dir.path().to_path_buf());
    let e = engine(dir.path());
    e.create(CreateOptions {
        name: "live".into(),
        memory: Some(ByteSize(64 << 20)),
        disks: vec![ByteSize(16 << 20)],
        accel: Some(Accel::Tcg),
        display: Some(DisplayMode::None),
        network: Some(NetworkMode::None),
        ..Default::default()
    })
    .unwrap();
    e.start("live").await.unwrap();
    let paths = e.paths(&VmName::new("live").unwrap());
    let status = Qmp::connect(paths.qmp_status()).await.unwrap();
    guest_write(&status, 0x41, 0, 65536).await;
    guest_write(&status, 0x61, 1 << 20, 65536).await;

    // A first (full) export: the instant is the open; later writes do not show in it.
    let f = e.fleece_open("live", &[req(None, "b1")]).await.unwrap();
    assert_eq!(f.disks[0].size, 16 << 20);
    guest_write(&status, 0x42, 0, 65536).await;
    assert!(
        export_has(&f.socket, "disk0", 0x41, 0, 65536),
        "the export is the disk at the instant"
    );
    assert!(!export_has(&f.socket, "disk0", 0x42, 0, 65536));
    assert!(export_has(&f.socket, "disk0", 0x61, 1 << 20, 65536));
    assert_eq!(bitmaps(&status).await, vec![("b1".to_string(), true)]);
    // The VM lock is held while the export lives.
    let err = e.fleece_open("live", &[req(None, "bx")]).await.err().unwrap();
    assert!(err.to_string().contains("is busy: backup"), "{err}");
    e.fleece_close(f, true).await.unwrap();

    // An incremental export: b1 is frozen and exported, b2 starts.
    guest_write(&status, 0x43, 2 << 20, 65536).await;
    let f = e.fleece_open("live", &[req(Some("b1"), "b2")]).await.unwrap();
    assert_eq!(
        bitmaps(&status).await,
        vec![("b1".to_string(), false), ("b2".to_string(), true)]
    );
    guest_write(&status, 0x44, 3 << 20, 65536).await; // recorded by b2 only
    assert!(export_has(&f.socket, "disk0", 0x42, 0, 65536));
    assert!(export_has(&f.socket, "disk0", 0x43, 2 << 20, 65536));
    // Our own NBD client reads the frozen bitmap: exactly the blocks written since the
    // first export (0x42 at 0, 0x43 at 2M), and their data at the instant.
    let opts = corral_nbd::ConnectOptions::new("disk0").dirty_bitmap("b1");
    let mut nbd = corral_nbd::NbdClient::connect_unix(&f.socket, &opts).await.unwrap();
    assert_eq!(nbd.size(), 16 << 20);
    let dirty: Vec<(u64, u64)> = nbd
        .dirty_extents("b1")
        .await
        .unwrap()
        .iter()
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(dirty, vec![(0, 65536), (2 << 20, 65536)]);
    assert_eq!(nbd.read(2 << 20, 65536).await.unwrap(), vec![0x43u8; 65536]);
    nbd.close().await.unwrap();
    // The backup "fails": b1 takes back what b2 recorded (the 0x44 write) and records again.
    e.fleece_close(f, false).await.unwrap();
    assert_eq!(bitmaps(&status).await, vec![("b1".to_string(), true)]);
    assert_eq!(
        bitmap_count(&status, "b1").await,
        3 * 65536,
        "b1 holds 0, 2M (its own) and 3M (merged from b2)"
    );

    // Nothing is left behind: no fleece nodes, files, jobs or socket.
    let nodes = status
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .unwrap();
    assert!(
        !nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node-name"].as_str().unwrap_or("").starts_with("fl-")),
        "{nodes}"
    );
    assert!(status.query_jobs().await.unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(&paths.run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("fleece") || n == "nbd.sock")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Unknown bitmap: a clear error, and the VM is untouched.
    let err = e.fleece_open("live", &[req(Some("nosuch"), "b3")]).await.err().unwrap();
    assert!(err.to_string().contains("no dirty bitmap \"nosuch\""), "{err}");
    assert_eq!(bitmaps(&status).await, vec![("b1".to_string(), true)]);
    drop(status);
    e.kill("live").await.unwrap();
}

/// The persistent bitmaps a qcow2 image holds on disk (`qemu-img info`).
fn image_bitmaps(img: &Path) -> Vec<String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["format-specific"]["data"]["bitmaps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            // A bitmap left "in-use" means its writer did not close the image cleanly.
            let in_use = b["flags"].as_array().unwrap().iter().any(|f| f == "in-use");
            format!(
                "{}{}",
                b["name"].as_str().unwrap(),
                if in_use { " (in-use)" } else { "" }
            )
        })
        .collect();
    names.sort();
    names
}

fn qemu_io_write(img: &Path, pattern: u8, offset: u64, len: u64) {
    let ok = Command::new("qemu-io")
        .arg("-c")
        .arg(format!("write -P {pattern} {offset} {len}"))
        .arg(img)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
}

#[tokio::test]
async fn stopped_vm_exports_through_the_storage_daemon() {
    let dir = tempfile::Builder::new().prefix("fl").tempdir_in("/tmp").unwrap();
    let _guard = KillOnDrop(dir.path().to_path_buf());
    let e = engine(dir.path());
    let spec = e
        .create(CreateOptions {
            name: "cold".into(),
            disks: vec![ByteSize(16 << 20)],
            accel: Some(Accel::Tcg),
            display: Some(DisplayMode::None),
            network: Some(NetworkMode::None),
            ..Default::default()
        })
        .unwrap();
    let img = spec.disks[0].path.clone().unwrap();
    qemu_io_write(&img, 0x51, 0, 65536);

    let f = e.fleece_open("cold", &[req(None, "c1")]).await.unwrap();
    assert_eq!(f.disks[0].size, 16 << 20);
    assert!(export_has(&f.socket, "disk0", 0x51, 0, 65536));
    // The disks are held: the VM cannot start meanwhile.
    let err = e.start("cold").await.err().unwrap();
    assert!(err.to_string().contains("is busy: backup"), "{err}");
    e.fleece_close(f, true).await.unwrap();
    assert_eq!(image_bitmaps(&img), vec!["c1"], "the new bitmap is stored in the image");

    // Writes while stopped are tracked by the stored bitmap; the next export hands over.
    qemu_io_write(&img, 0x52, 1 << 20, 65536);
    let f = e.fleece_open("cold", &[req(Some("c1"), "c2")]).await.unwrap();
    assert!(export_has(&f.socket, "disk0", 0x52, 1 << 20, 65536));
    e.fleece_close(f, true).await.unwrap();
    assert_eq!(image_bitmaps(&img), vec!["c2"]);

    // A missing bitmap is a clear error and leaves the image as it was.
    let err = e.fleece_open("cold", &[req(Some("c1"), "c3")]).await.err().unwrap();
    assert!(err.to_string().contains("no dirty bitmap \"c1\""), "{err}");
    assert_eq!(image_bitmaps(&img), vec!["c2"]);
    let run = e.paths(&VmName::new("cold").unwrap()).run;
    let left: Vec<_> = std::fs::read_dir(&run)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| n != "nbd.sock"), "{left:?}");
}
