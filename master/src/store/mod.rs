//! Durable storage for openraft: the log, the vote and the state machine's snapshots.
//!
//! - `log.rs`: [`LogStore`], the Raft log (one append-only file of framed records, fsynced before
//!   openraft is told an entry is durable) and the vote.
//! - `state_machine.rs`: [`StateMachine`], the applied [`State`](crate::state::State) shared
//!   with the read path ([`Applied`]), checkpointed as snapshot files.
//!
//! openraft calls these stores from async tasks on the runtime's workers. Every write, fsync,
//! rename and snapshot encoding or decoding runs on tokio's blocking pool ([`blocking`]) instead:
//! an fsync takes milliseconds, a snapshot seconds, and a worker held that long stalls every
//! request it serves. `spawn_blocking` rather than `block_in_place`: the data the work needs is
//! owned or shared (`Arc`s, entries handed over by value), and `block_in_place` panics on a
//! current-thread runtime (tests) and still holds the calling task for the whole wait. Each call
//! awaits its blocking task, so openraft still sees the same order and is told an append is
//! durable only after its fsync.

// openraft's StorageError is large by design; the storage traits return it.
#![allow(clippy::result_large_err)]

mod log;
mod state_machine;

pub use self::log::LogStore;
pub use state_machine::{Applied, StateMachine};

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

type NodeId = u64;
type Node = openraft::BasicNode;

/// Version of the log record and snapshot formats.
pub const STORAGE_VERSION: u16 = 1;

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs file work `f` on tokio's blocking pool and waits for it (see the module doc).
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_err(format!("a storage task did not finish: {e}")))?
}

/// Polls the future `start` makes once, on a current-thread runtime in another thread, while the
/// caller holds `held` (a lock the future's file work needs): work done on the blocking pool
/// waits for the lock there and leaves the runtime's one thread free (the future is pending),
/// while work done in the async fn itself would block that thread, and the poll never return.
/// Then lets go of `held` and waits for the future to finish.
#[cfg(test)]
fn assert_runs_off_the_runtime<H, F, S>(held: H, start: S)
where
    S: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let mut fut = std::pin::pin!(start());
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
            let _ = tx.send(first.is_pending());
            fut.await;
        })
    });
    let pending = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the file work blocked the runtime's thread");
    assert!(pending, "the file work finished while its lock was held");
    drop(held);
    t.join().expect("the future finished");
}
