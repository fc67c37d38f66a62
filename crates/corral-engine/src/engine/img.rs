//! qemu-img: the offline path for every disk operation, and how corral reads image chains.
//!
//! Short calls (`info`, `create`, `snapshot`) run to completion; long ones (`convert`,
//! `commit`) run asynchronously with `-p`, and their percentage lines become job progress.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::jobs::Job;
use super::Engine;
use crate::error::EngineError;
use crate::process::find_binary;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImgSnapshot {
    pub name: String,
    #[serde(rename = "vm-state-size")]
    pub vm_state_size: u64,
    #[serde(rename = "date-sec")]
    pub date_sec: i64,
    #[serde(rename = "vm-clock-sec")]
    pub vm_clock_sec: i64,
    #[serde(rename = "vm-clock-nsec")]
    pub vm_clock_nsec: i64,
}

/// One image as `qemu-img info --output=json` describes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImgInfo {
    #[serde(default)]
    pub filename: PathBuf,
    #[serde(default)]
    pub format: String,
    #[serde(rename = "virtual-size", default)]
    pub virtual_size: u64,
    #[serde(default)]
    pub snapshots: Vec<ImgSnapshot>,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    /// qcow2 details: the persistent dirty bitmaps.
    #[serde(rename = "format-specific", default)]
    pub format_specific: FormatSpecific,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FormatSpecific {
    #[serde(default)]
    pub data: FormatData,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FormatData {
    #[serde(default)]
    pub bitmaps: Vec<ImgBitmap>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImgBitmap {
    pub name: String,
}

impl ImgInfo {
    /// The names of the image's persistent dirty bitmaps.
    pub(crate) fn bitmaps(&self) -> impl Iterator<Item = &str> {
        self.format_specific.data.bitmaps.iter().map(|b| b.name.as_str())
    }
}

/// Parses qemu-img's `-p` output: `    (12.34/100%)\r` → 12.34.
fn last_percent(buf: &str) -> Option<f64> {
    let end = buf.rfind("/100%)")?;
    let start = buf[..end].rfind('(')? + 1;
    buf[start..end].trim().parse().ok()
}

impl Engine {
    pub(crate) fn qemu_img(&self, args: &[&str], what: &str) -> Result<Vec<u8>, EngineError> {
        let bin = find_binary(&self.cfg.qemu.img_binary).map_err(|_| EngineError::QemuMissing {
            binary: self.cfg.qemu.img_binary.clone(),
            where_: " in $PATH".into(),
        })?;
        let out = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(EngineError::io(&self.cfg.qemu.img_binary))?;
        if !out.status.success() {
            return Err(EngineError::Tool {
                what: what.to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    pub(crate) fn img_info(&self, path: &Path) -> Result<ImgInfo, EngineError> {
        let p = path.display().to_string();
        // -U: read even while QEMU holds the image (headers and snapshot tables are
        // consistent on disk).
        let out = self.qemu_img(&["info", "-U", "--output=json", &p], &format!("qemu-img info {p}"))?;
        serde_json::from_slice(&out).map_err(|e| EngineError::Tool {
            what: format!("qemu-img info {p}"),
            message: e.to_string(),
        })
    }

    /// The chain of `path`: the image itself first, then its backing files down to the bottom.
    pub(crate) fn img_chain(&self, path: &Path) -> Result<Vec<ImgInfo>, EngineError> {
        let p = path.display().to_string();
        let out = self.qemu_img(
            &["info", "-U", "--backing-chain", "--output=json", &p],
            &format!("qemu-img info {p}"),
        )?;
        let mut chain: Vec<ImgInfo> = serde_json::from_slice(&out).map_err(|e| EngineError::Tool {
            what: format!("qemu-img info {p}"),
            message: e.to_string(),
        })?;
        // qemu-img prints names relative to its working directory when it was given relative
        // ones (corral always passes absolute paths; this keeps comparisons right regardless).
        for layer in &mut chain {
            if layer.filename.is_relative() {
                if let Ok(abs) = std::path::absolute(&layer.filename) {
                    layer.filename = abs;
                }
            }
        }
        Ok(chain)
    }

    /// Creates a qcow2 overlay on `backing` without opening it (it may be in use by QEMU).
    pub(crate) fn create_overlay(
        &self,
        overlay: &Path,
        backing: &Path,
        backing_format: &str,
        size: u64,
    ) -> Result<(), EngineError> {
        let (o, b) = (overlay.display().to_string(), backing.display().to_string());
        self.qemu_img(
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-o",
                "lazy_refcounts=on",
                "-F",
                backing_format,
                "-b",
                &b,
                &o,
                &size.to_string(),
            ],
            &format!("qemu-img create {o}"),
        )?;
        Ok(())
    }

    /// Runs a long qemu-img command with `-p` (the caller includes it), turning its
    /// percentages into job progress: `base + pct × weight` of `total`.
    pub(crate) async fn qemu_img_job(
        &self,
        args: &[String],
        what: &str,
        job: &Job<'_>,
        base: u64,
        weight: u64,
        total: u64,
    ) -> Result<(), EngineError> {
        let bin = find_binary(&self.cfg.qemu.img_binary).map_err(|_| EngineError::QemuMissing {
            binary: self.cfg.qemu.img_binary.clone(),
            where_: " in $PATH".into(),
        })?;
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(EngineError::io(&self.cfg.qemu.img_binary))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_task = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut buf = [0u8; 512];
        let mut tail: Vec<u8> = vec![];
        loop {
            let n = stdout.read(&mut buf).await.map_err(EngineError::io(what))?;
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if let Some(pct) = last_percent(&String::from_utf8_lossy(&tail)) {
                job.progress(base + (weight as f64 * pct / 100.0) as u64, total);
            }
            if tail.len() > 256 {
                tail.drain(..tail.len() - 64);
            }
        }
        let status = child.wait().await.map_err(EngineError::io(what))?;
        let stderr = err_task.await.unwrap_or_default();
        if !status.success() {
            return Err(EngineError::Tool {
                what: what.to_string(),
                message: stderr.trim().to_string(),
            });
        }
        job.progress(base + weight, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::last_percent;

    #[test]
    fn percent_lines() {
        assert_eq!(last_percent("    (0.00/100%)\r    (12.50/100%)\r"), Some(12.5));
        assert_eq!(last_percent("    (100.00/100%)\r\nImage committed.\n"), Some(100.0));
        assert_eq!(last_percent("no progress here"), None);
        assert_eq!(last_percent("    (12.5"), None);
    }
}
