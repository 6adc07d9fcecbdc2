//! Durable storage for openraft: the log, the vote and the state machine's snapshots.
//!
//! - `log.rs`: [`LogStore`], the Raft log (one append-only file of framed records, fsynced before
//!   openraft is told an entry is durable) and the vote.
//! - `state_machine.rs`: [`StateMachine`], the applied [`State`](crate::state::State) shared
//!   with the read path ([`Applied`]), checkpointed as snapshot files.

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
