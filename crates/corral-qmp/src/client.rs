//! The connection: connect/handshake, the reader task, sending commands.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot, watch, Mutex};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::error::QmpError;
use crate::wire::{self, Incoming, Reply};
use crate::{Event, QemuVersion};

/// Capacity of the event broadcast channel; slower receivers see `Lagged`.
const EVENT_CAPACITY: usize = 256;
/// Pause between connection attempts in [`Qmp::connect_retry`].
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// A QMP connection. Cheap to clone; all clones share the one connection.
/// The reader task is stopped when the last clone is dropped.
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Every message goes out whole while this lock is held, so lines from
    /// concurrent callers never interleave, and an fd rides with its command.
    writer: Arc<Mutex<OwnedWriteHalf>>,
    next_id: AtomicU64,
    version: QemuVersion,
    reader: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// State shared between the handles and the reader task.
struct Shared {
    pending: StdMutex<Pending>,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct Pending {
    closed: bool,
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain map; the map itself is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, QmpError> {
        let mut pending = self.lock();
        if pending.closed {
            return Err(QmpError::Disconnected);
        }
        let (tx, rx) = oneshot::channel();
        pending.waiters.insert(id, tx);
        Ok(rx)
    }

    fn dispatch(&self, id: Option<Value>, reply: Reply) {
        let Some(id) = id.as_ref().and_then(Value::as_u64) else {
            warn!(?id, ?reply, "QMP reply without a usable id, ignored");
            return;
        };
        let waiter = self.lock().waiters.remove(&id);
        match waiter {
            // The caller may have given up (future dropped); that is fine.
            Some(tx) => drop(tx.send(reply)),
            None => warn!(id, ?reply, "QMP reply with unknown id, ignored"),
        }
    }

    /// Called once when the reader ends: fails every waiter with
    /// `Disconnected` (by dropping its sender) and wakes `closed()`.
    fn shut_down(&self) {
        let waiters = {
            let mut pending = self.lock();
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        drop(waiters);
        self.closed.send_replace(true);
    }
}

/// Removes a waiter whose caller went away before the reply came.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.id);
    }
}

impl Qmp {
    /// Connects to QEMU's QMP unix socket, reads the greeting and leaves
    /// capabilities negotiation mode with `qmp_capabilities`.
    ///
    /// This does not time out by itself: QEMU serves one QMP client per
    /// socket at a time, and a second client waits (without greeting) until
    /// the first disconnects. Use [`Qmp::connect_retry`] for a bounded wait.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Qmp, QmpError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await?;
        debug!(path = %path.display(), "QMP socket connected");
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);

        let mut line = Vec::new();
        if read_message(&mut read, &mut line).await? == 0 {
            return Err(QmpError::Protocol("connection closed before the QMP greeting".into()));
        }
        debug!("<- {}", String::from_utf8_lossy(&line).trim_end());
        let greeting = wire::parse_greeting(&line)?;

        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            pending: StdMutex::new(Pending::default()),
            events,
            closed: watch::channel(false).0,
        });
        let reader = tokio::spawn(reader_loop(shared.clone(), read)).abort_handle();
        let qmp = Qmp {
            inner: Arc::new(Inner {
                shared,
                writer: Arc::new(Mutex::new(write)),
                next_id: AtomicU64::new(1),
                version: greeting.version,
                reader,
            }),
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Like [`Qmp::connect`], but keeps trying until `timeout` has passed:
    /// the socket may not exist yet (or not accept yet) while QEMU starts.
    /// Fails with [`QmpError::Timeout`] naming the last error seen.
    pub async fn connect_retry(path: impl AsRef<Path>, timeout: Duration) -> Result<Qmp, QmpError> {
        let path = path.as_ref();
        let mut last_error: Option<String> = None;
        let attempts = async {
            loop {
                match Qmp::connect(path).await {
                    Ok(qmp) => return Ok(qmp),
                    Err(QmpError::Io(e)) if retriable(&e) => {
                        last_error = Some(e.to_string());
                    }
                    // QEMU hung up during the handshake (e.g. it was still
                    // setting up, or it is being restarted): try again.
                    Err(e @ (QmpError::Disconnected | QmpError::Protocol(_))) => {
                        last_error = Some(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        };
        let outcome = tokio::time::timeout(timeout, attempts).await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(QmpError::Timeout(format!(
                "no QMP connection on {} after {:?} ({})",
                path.display(),
                timeout,
                last_error.as_deref().unwrap_or("greeting never arrived")
            ))),
        }
    }

    /// QEMU's version, as announced in the greeting.
    pub fn version(&self) -> &QemuVersion {
        &self.inner.version
    }

    /// Sends `{"execute": cmd, "arguments": args, "id": N}` and resolves with
    /// the `"return"` value of the matching reply.
    pub async fn execute(&self, cmd: &str, args: Option<Value>) -> Result<Value, QmpError> {
        self.send_command(cmd, args, None).await
    }

    /// [`Qmp::execute`], then deserialises the return value into `T`.
    pub async fn execute_as<T: DeserializeOwned>(&self, cmd: &str, args: Option<Value>) -> Result<T, QmpError> {
        let value = self.execute(cmd, args).await?;
        serde_json::from_value(value).map_err(|e| QmpError::Protocol(format!("unexpected reply to {cmd}: {e}")))
    }

    /// Like [`Qmp::execute`], but passes `fd` to QEMU with `SCM_RIGHTS` on
    /// the same message as the command (for `getfd`, `add-fd`, ...).
    /// The descriptor is duplicated, so the caller may close it right away.
    pub async fn execute_with_fd(&self, cmd: &str, args: Option<Value>, fd: BorrowedFd<'_>) -> Result<Value, QmpError> {
        let fd = fd.try_clone_to_owned()?;
        self.send_command(cmd, args, Some(fd)).await
    }

    /// A new receiver of every event QEMU sends from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Resolves when the connection has closed (QEMU exited or the socket
    /// was shut down). Returns at once if it already has.
    pub async fn closed(&self) {
        let mut rx = self.inner.shared.closed.subscribe();
        // Only fails if the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    async fn send_command(&self, cmd: &str, args: Option<Value>, fd: Option<OwnedFd>) -> Result<Value, QmpError> {
        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let message = wire::encode_command(cmd, args.as_ref(), id);
        let reply = shared.register(id)?;
        let _guard = WaiterGuard { shared, id };

        debug!(
            fd = fd.as_ref().map(AsRawFd::as_raw_fd),
            "-> {}",
            String::from_utf8_lossy(&message).trim_end()
        );
        // The write runs in its own task so that a caller dropping this
        // future mid-write can never leave half a command on the socket.
        let writer = self.inner.writer.clone();
        let write = tokio::spawn(async move {
            let mut writer = writer.lock().await;
            write_message(&mut writer, &message, fd.as_ref()).await
        });
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_disconnect(&e) => return Err(QmpError::Disconnected),
            Ok(Err(e)) => return Err(QmpError::Io(e)),
            Err(join) => return Err(QmpError::Io(io::Error::other(join))),
        }

        match reply.await {
            Ok(reply) => reply.into_result(cmd),
            Err(_) => Err(QmpError::Disconnected),
        }
    }
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.inner.version)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn retriable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// Reads the next non-blank line into `line`; returns 0 at end of stream.
async fn read_message(read: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        line.clear();
        let n = read.read_until(b'\n', line).await?;
        if n == 0 || !line.trim_ascii().is_empty() {
            return Ok(n);
        }
    }
}

async fn reader_loop(shared: Arc<Shared>, mut read: BufReader<OwnedReadHalf>) {
    let mut line = Vec::new();
    loop {
        match read_message(&mut read, &mut line).await {
            Ok(0) => {
                debug!("QMP connection closed by QEMU");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "QMP read failed, closing");
                break;
            }
        }
        debug!("<- {}", String::from_utf8_lossy(&line).trim_end());
        match wire::parse_incoming(&line) {
            Ok(Incoming::Reply { id, reply }) => shared.dispatch(id, reply),
            Ok(Incoming::Event(event)) => {
                // No receivers is not an error: nobody is listening.
                let _ = shared.events.send(event);
            }
            Err(e) => warn!(error = %e, "ignoring QMP message"),
        }
    }
    shared.shut_down();
}

/// Writes one whole message; with `fd`, the first bytes carry it as
/// `SCM_RIGHTS` ancillary data and the rest (if the kernel took only part)
/// follows as plain bytes.
async fn write_message(writer: &mut OwnedWriteHalf, mut buf: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
    if let Some(fd) = fd {
        let stream: &UnixStream = writer.as_ref();
        let sent = loop {
            stream.writable().await?;
            let res = stream.try_io(Interest::WRITABLE, || {
                send_with_fd(stream.as_raw_fd(), buf, fd.as_raw_fd())
            });
            match res {
                Ok(n) => break n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        };
        buf = &buf[sent..];
    }
    writer.write_all(buf).await?;
    writer.flush().await
}

fn send_with_fd(sock: RawFd, buf: &[u8], fd: RawFd) -> io::Result<usize> {
    let fds = [fd];
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(buf)];
    let n = sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "sendmsg wrote nothing"));
    }
    Ok(n)
}
