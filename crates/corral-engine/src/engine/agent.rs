//! A small client for the QEMU guest agent (`qemu-ga` in the guest) on the VM's `qga.sock`:
//! enough to freeze and thaw the guest's filesystems around a backup's point in time, and to
//! ping a guest as a sign of life.
//!
//! The agent speaks QMP-like JSON lines but has no greeting, and a reply to an earlier client
//! may still be in the channel; `guest-sync` with a fresh id resynchronises (replies until the
//! one carrying that id are dropped). Every call has a timeout: a guest without a running
//! agent must never hang corral.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent is not answering ({0})")]
    Unreachable(String),
    #[error("the guest agent refused {command}: {desc}")]
    Command { command: String, desc: String },
    #[error("the guest agent did not answer {command} within {seconds}s")]
    Timeout { command: String, seconds: u64 },
}

/// One guest interface's counters as the agent reports them (the guest's view: rx is what
/// the guest received).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub mac: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

pub struct GuestAgent {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl GuestAgent {
    /// Connects and synchronises; fails fast when no agent runs in the guest.
    pub async fn connect(sock: &Path, timeout: Duration) -> Result<GuestAgent, AgentError> {
        let stream = UnixStream::connect(sock)
            .await
            .map_err(|e| AgentError::Unreachable(format!("{}: {e}", sock.display())))?;
        let (r, w) = stream.into_split();
        let mut agent = GuestAgent {
            r: BufReader::new(r),
            w,
        };
        let id = (std::process::id() as u64) << 20 | (super::jobs::now_ms() as u64 & 0xfffff);
        let reply = agent
            .call_until("guest-sync", json!({"id": id}), timeout, |v| v["return"] == json!(id))
            .await
            .map_err(|e| match e {
                AgentError::Timeout { .. } => AgentError::Unreachable("no reply to guest-sync".into()),
                other => other,
            })?;
        debug_assert_eq!(reply["return"], json!(id));
        Ok(agent)
    }

    async fn call_until(
        &mut self,
        command: &str,
        args: Value,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, AgentError> {
        let mut line = json!({"execute": command});
        if !args.is_null() {
            line["arguments"] = args;
        }
        let io = |e: std::io::Error| AgentError::Unreachable(e.to_string());
        let work = async {
            self.w.write_all(format!("{line}\n").as_bytes()).await.map_err(io)?;
            loop {
                let mut buf = String::new();
                if self.r.read_line(&mut buf).await.map_err(io)? == 0 {
                    return Err(AgentError::Unreachable("the channel closed".into()));
                }
                let Ok(v) = serde_json::from_str::<Value>(buf.trim_start_matches('\u{ff}')) else {
                    continue;
                };
                if let Some(err) = v.get("error") {
                    return Err(AgentError::Command {
                        command: command.to_string(),
                        desc: err["desc"].as_str().unwrap_or("").to_string(),
                    });
                }
                if done(&v) {
                    return Ok(v);
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| AgentError::Timeout {
                command: command.to_string(),
                seconds: timeout.as_secs(),
            })?
    }

    async fn call(&mut self, command: &str, args: Value, timeout: Duration) -> Result<Value, AgentError> {
        let v = self
            .call_until(command, args, timeout, |v| v.get("return").is_some())
            .await?;
        Ok(v["return"].clone())
    }

    pub async fn ping(&mut self, timeout: Duration) -> Result<(), AgentError> {
        self.call("guest-ping", Value::Null, timeout).await.map(|_| ())
    }

    /// Freezes the guest's filesystems; returns how many it froze.
    pub async fn freeze(&mut self, timeout: Duration) -> Result<u64, AgentError> {
        Ok(self
            .call("guest-fsfreeze-freeze", Value::Null, timeout)
            .await?
            .as_u64()
            .unwrap_or(0))
    }

    /// Thaws them again; returns how many it thawed.
    pub async fn thaw(&mut self, timeout: Duration) -> Result<u64, AgentError> {
        Ok(self
            .call("guest-fsfreeze-thaw", Value::Null, timeout)
            .await?
            .as_u64()
            .unwrap_or(0))
    }

    /// Traffic counters of the guest's interfaces, by MAC address (lower case). The agent
    /// reports them only for interfaces that have an address.
    pub async fn interface_stats(&mut self, timeout: Duration) -> Result<Vec<InterfaceStats>, AgentError> {
        let v = self.call("guest-network-get-interfaces", Value::Null, timeout).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let st = i.get("statistics")?;
                let n = |k: &str| st.get(k).and_then(Value::as_u64).unwrap_or(0);
                Some(InterfaceStats {
                    name: i.get("name")?.as_str()?.to_string(),
                    mac: i.get("hardware-address")?.as_str()?.to_ascii_lowercase(),
                    rx_bytes: n("rx-bytes"),
                    tx_bytes: n("tx-bytes"),
                    rx_packets: n("rx-packets"),
                    tx_packets: n("tx-packets"),
                })
            })
            .collect())
    }

    /// `thawed` or `frozen`.
    pub async fn freeze_status(&mut self, timeout: Duration) -> Result<String, AgentError> {
        Ok(self
            .call("guest-fsfreeze-status", Value::Null, timeout)
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }
}
