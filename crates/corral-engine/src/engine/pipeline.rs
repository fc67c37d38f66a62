//! The backup read path of one disk, as a pipeline: NBD reads of whole runs of chunks on
//! the calling task, hashing and compression on worker threads, pack writes on one more
//! thread. While QEMU serves the next read, both cores hash and compress the last ones.
//!
//! The writer moves into the pack thread and comes back at the end, so a failure anywhere
//! (a read error, a full store) stops every stage and drops nothing half-published: the
//! caller drops the writer, which removes its unfinished pack.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use corral_nbd::NbdClient;
use corral_store::{BackupWriter, DiskHandle, PreparedChunk, StoreError};
use corral_types::TransferBytes;

use crate::error::EngineError;

/// The largest single NBD read: long enough that a round trip costs little, short enough
/// that a few in flight stay small in memory.
const RUN_BYTES: u64 = 4 << 20;
/// Runs read ahead of the hashing threads.
const QUEUE: usize = 4;
/// NBD connections reading one export at once.
pub(crate) const READERS: usize = 2;

/// Byte counts shared between the pack thread and the progress reporter.
#[derive(Default)]
pub(crate) struct Counters {
    read: AtomicU64,
    new: AtomicU64,
    reused: AtomicU64,
    stored: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransferBytes {
        TransferBytes {
            read: self.read.load(Ordering::Relaxed),
            new: self.new.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
        }
    }

    /// The writer's counts (they cover every disk of the backup so far).
    fn set(&self, s: &corral_store::BackupStats) {
        self.read.store(s.bytes_read, Ordering::Relaxed);
        self.new.store(s.new_bytes, Ordering::Relaxed);
        self.reused.store(s.reused_bytes, Ordering::Relaxed);
        self.stored.store(s.stored_bytes, Ordering::Relaxed);
    }
}

/// Groups sorted chunk offsets into contiguous runs of at most `RUN_BYTES`, clipped to the
/// disk's end: `(offset, length)`.
pub(crate) fn runs(offsets: &[u64], chunk: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = vec![];
    for &off in offsets {
        let len = chunk.min(size.saturating_sub(off));
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some((start, l)) if *start + *l == off && *l + len <= RUN_BYTES.max(chunk) => *l += len,
            _ => out.push((off, len)),
        }
    }
    out
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// What to read of one disk: the chunks at `offsets` (sorted, multiples of `chunk`) into
/// `disk` of the writer.
pub(crate) struct ReadPlan<'a> {
    pub disk: DiskHandle,
    pub offsets: &'a [u64],
    pub chunk: u64,
}

/// Reads the chunks at `offsets` (sorted, chunk-aligned) through the `readers` (connections
/// to one export) and stores them on `disk` of `writer`. Returns the writer and the offsets written. `progress` gets the
/// number of offsets handled so far.
pub(crate) async fn store_chunks(
    vm: &str,
    readers: Vec<NbdClient>,
    writer: BackupWriter,
    plan: ReadPlan<'_>,
    counters: &Arc<Counters>,
    mut progress: impl FnMut(usize),
) -> Result<(BackupWriter, HashSet<u64>), EngineError> {
    let ReadPlan { disk, offsets, chunk } = plan;
    let size = readers.first().map(|r| r.size()).unwrap_or(0);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<(u64, Vec<u8>)>(QUEUE);
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<Vec<(u64, PreparedChunk)>>(QUEUE * 2);
    let preparer = writer.preparer();
    let threads: Vec<_> = (0..workers())
        .map(|_| {
            let (rx, tx, p) = (batch_rx.clone(), done_tx.clone(), preparer.clone());
            std::thread::spawn(move || loop {
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                let Some((start, data)) = next else { break };
                let prepared = data
                    .chunks(chunk as usize)
                    .enumerate()
                    .map(|(i, c)| (start + i as u64 * chunk, p.prepare(c)))
                    .collect();
                if tx.send(prepared).is_err() {
                    break; // the pack thread stopped: its error is the one to report
                }
            })
        })
        .collect();
    // Only the workers hold the queue's receiver: when they all stop (the pack thread
    // failed), the readers' next send fails instead of waiting forever.
    drop(batch_rx);
    drop(done_tx);
    let sink_counters = counters.clone();
    let handled = Arc::new(AtomicU64::new(0));
    let sink_handled = handled.clone();
    let sink = std::thread::spawn(move || -> Result<(BackupWriter, HashSet<u64>), StoreError> {
        let mut writer = writer;
        let mut written = HashSet::new();
        for batch in done_rx {
            let n = batch.len() as u64;
            for (off, p) in batch {
                writer.put_prepared(disk, off, p)?;
                written.insert(off);
            }
            sink_counters.set(writer.stats());
            sink_handled.fetch_add(n, Ordering::Relaxed);
        }
        Ok((writer, written))
    });
    // Several connections read at once, so QEMU serves the next run while the last is
    // still on its way: one alone leaves a core idle.
    let runs = Arc::new(runs(offsets, chunk, size));
    let next_run = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut nbd in readers {
        let (runs, next_run, tx) = (runs.clone(), next_run.clone(), batch_tx.clone());
        tasks.spawn(async move {
            loop {
                let k = next_run.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(start, len)) = runs.get(k) else { break };
                let data = nbd.read(start, len as usize).await.map_err(|e| (start, e))?;
                if tx.send((start, data)).await.is_err() {
                    break; // every worker is gone because the pack thread failed
                }
            }
            let _ = nbd.close().await;
            Ok::<(), (u64, corral_nbd::NbdError)>(())
        });
    }
    drop(batch_tx);
    let mut read_err = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err((start, e)))) => {
                    read_err.get_or_insert_with(|| EngineError::op(
                        vm,
                        "backup",
                        format!(
                            "reading the disk at offset {start} failed: {e}. Nothing was stored; if the VM \
                             stopped or its QEMU ended meanwhile, run the backup again"
                        ),
                    ));
                    tasks.abort_all();
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => {
                    read_err.get_or_insert_with(|| EngineError::op(vm, "backup", format!("a reader task failed: {e}")));
                }
            },
            _ = tick.tick() => progress(handled.load(Ordering::Relaxed) as usize),
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        sink.join()
    })
    .await
    .map_err(|e| EngineError::op(vm, "backup", format!("the pipeline's task failed: {e}")))?
    .map_err(|_| EngineError::op(vm, "backup", "the pack writer thread panicked"))?;
    progress(handled.load(Ordering::Relaxed) as usize);
    let stored = joined.map_err(super::backup::store_err);
    if let Some(e) = read_err {
        return Err(e);
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_neighbours_up_to_the_limit_and_clip_at_the_end() {
        let c = 65536;
        assert_eq!(runs(&[0, c, 3 * c], c, 10 * c), vec![(0, 2 * c), (3 * c, c)]);
        let many: Vec<u64> = (0..100).map(|i| i * c).collect();
        let r = runs(&many, c, 100 * c);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (0, RUN_BYTES));
        assert_eq!(r[1], (RUN_BYTES, 100 * c - RUN_BYTES));
        // A disk that ends mid-chunk: the last run is short.
        assert_eq!(runs(&[0, c], c, c + 512), vec![(0, c + 512)]);
        assert!(runs(&[], c, c).is_empty());
    }
}
