//! QMP helpers for devices of a running VM: find a disk's block backend by device id, see
//! which spare hot-plug ports are free, and unplug a device (waiting until the guest lets go).

use std::time::Duration;

use corral_qmp::{ErrorClass, Qmp, QmpError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::EngineError;
use crate::qemu_args::{hotplug_port, HOTPLUG_PORTS};

/// One block backend of the running QEMU, from `query-block`.
#[derive(Debug, Deserialize)]
struct BlockInfo {
    #[serde(default)]
    qdev: String,
    inserted: Option<Inserted>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Inserted {
    #[serde(rename = "node-name")]
    pub node_name: String,
    pub image: ImageSize,
}

#[derive(Debug, Deserialize)]
pub(super) struct ImageSize {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

/// Whether a `query-block` qdev path belongs to the device with id `id`. QEMU 7.2 gives the
/// bare id for IDE/SCSI devices and `/machine/peripheral/ID/virtio-backend` for virtio.
fn qdev_is(qdev: &str, id: &str) -> bool {
    qdev == id
        || qdev
            .strip_prefix("/machine/peripheral/")
            .map(|rest| rest == id || rest.starts_with(&format!("{id}/")))
            .unwrap_or(false)
}

/// The block backend the device `id` reads from in the running QEMU, if it has one.
/// `None`: no such device; `Some(None)`: the device has no medium (an empty CD-ROM drive).
pub(super) async fn find_block(qmp: &Qmp, vm: &str, id: &str) -> Result<Option<Option<Inserted>>, EngineError> {
    let list: Vec<BlockInfo> = qmp
        .execute_as("query-block", None)
        .await
        .map_err(EngineError::qmp(vm))?;
    Ok(list.into_iter().find(|b| qdev_is(&b.qdev, id)).map(|b| b.inserted))
}

/// The PCI devices of the running QEMU: every device id, and the spare ports that are free.
pub(super) struct PciView {
    pub ids: Vec<String>,
    pub free_ports: Vec<String>,
}

pub(super) async fn pci_view(qmp: &Qmp, vm: &str) -> Result<PciView, EngineError> {
    fn walk(devs: &[Value], view: &mut PciView) {
        for d in devs {
            let id = d.get("qdev_id").and_then(Value::as_str).unwrap_or_default();
            if !id.is_empty() {
                view.ids.push(id.to_string());
            }
            if let Some(children) = d.pointer("/pci_bridge/devices").and_then(Value::as_array) {
                let spare = (0..HOTPLUG_PORTS).any(|i| hotplug_port(i) == id);
                if spare && children.is_empty() {
                    view.free_ports.push(id.to_string());
                }
                walk(children, view);
            }
        }
    }
    let buses = qmp.execute("query-pci", None).await.map_err(EngineError::qmp(vm))?;
    let mut view = PciView {
        ids: vec![],
        free_ports: vec![],
    };
    for bus in buses.as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(devs) = bus.get("devices").and_then(Value::as_array) {
            walk(devs, &mut view);
        }
    }
    view.free_ports.sort();
    Ok(view)
}

pub(super) enum UnplugError {
    /// The device sits on a bus that cannot hot-unplug (q35's `pcie.0`).
    RootBus,
    Timeout,
    Qmp(QmpError),
}

/// `device_del`, then waits for QEMU's `DEVICE_DELETED` for the device: the guest must
/// release it first. A device that is already gone counts as unplugged.
pub(super) async fn unplug(qmp: &Qmp, vm: &str, id: &str, timeout: Duration) -> Result<(), UnplugError> {
    let mut events = qmp.events();
    match qmp.execute("device_del", Some(json!({"id": id}))).await {
        Ok(_) => {}
        Err(QmpError::Command {
            class: ErrorClass::DeviceNotFound,
            ..
        }) => return Ok(()),
        Err(QmpError::Command { desc, .. }) if desc.contains("does not support hotplugging") => {
            return Err(UnplugError::RootBus)
        }
        // A request from an earlier, timed-out attempt is still pending: keep waiting for it.
        Err(QmpError::Command { desc, .. }) if desc.contains("pending") => {}
        Err(e) => return Err(UnplugError::Qmp(e)),
    }
    let wait = async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.name == "DEVICE_DELETED" && ev.data.get("device").and_then(Value::as_str) == Some(id) => {
                    return Ok(())
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(UnplugError::Qmp(QmpError::Disconnected))
                }
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => {
            // The event may have been missed (lagged receiver): ask QEMU whether it is gone.
            match qmp
                .execute("qom-list", Some(json!({"path": format!("/machine/peripheral/{id}")})))
                .await
            {
                Err(QmpError::Command { .. }) => Ok(()),
                _ => {
                    tracing::warn!(vm, id, "guest did not release the device");
                    Err(UnplugError::Timeout)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdev_paths_match_device_ids() {
        assert!(qdev_is("/machine/peripheral/data1/virtio-backend", "data1"));
        assert!(qdev_is("cd0", "cd0"));
        assert!(qdev_is("/machine/peripheral/d1", "d1"));
        assert!(!qdev_is("/machine/peripheral/data10/virtio-backend", "data1"));
        assert!(!qdev_is("cd01", "cd0"));
    }
}
