//! The serial console log: print it, or follow it while the VM runs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::state::live_pid;
use super::Engine;
use crate::error::EngineError;

impl Engine {
    /// Writes the console log to `out`; with `follow`, keeps writing what the guest prints
    /// until the VM stops (or the caller is interrupted).
    pub async fn console(&self, name: &str, follow: bool, out: &mut (dyn Write + Send)) -> Result<(), EngineError> {
        let spec = self.get_spec(name)?;
        let paths = self.paths(&spec.name);
        if !spec.serial_log {
            return Err(EngineError::op(
                name,
                "console",
                "the VM has serial_log = false; set it to true (`corral vm edit`) to keep a console log",
            ));
        }
        let log = paths.console_log();
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Ok(mut f) = std::fs::File::open(&log) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < pos {
                    pos = 0; // truncated or replaced
                }
                f.seek(SeekFrom::Start(pos)).map_err(EngineError::io(&log))?;
                loop {
                    let n = f.read(&mut buf).map_err(EngineError::io(&log))?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(EngineError::io("stdout"))?;
                    pos += n as u64;
                }
                out.flush().map_err(EngineError::io("stdout"))?;
            } else if !follow {
                return Err(EngineError::MissingFile {
                    what: "console log".into(),
                    path: log,
                    hint: "the VM has not been started yet".into(),
                });
            }
            if !follow || live_pid(&spec, &paths).is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
