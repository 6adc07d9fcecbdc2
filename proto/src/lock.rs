//! One process per data folder: every role takes an exclusive lock on each folder it writes
//! (a master's data folder, every chunkserver disk, a local cluster's folder) before it reads
//! anything there, and holds it until it exits. Two processes on one folder would both append
//! to one Raft log, or both judge one set of chunk files; the second one exits at once instead,
//! naming the folder and the process that holds it.
//!
//! The lock is an advisory `flock` on `LOCK` in the folder (released by the kernel when the
//! process dies, so a crash never leaves a stale lock); the file holds the holder's pid, for the
//! message only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in a locked folder.
pub const LOCK_FILE: &str = "LOCK";

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the folder.
    #[error("{dir} is in use by another tinydfs process{}; stop it first", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { dir: PathBuf, holder: Option<u32> },
    /// The lock file could not be created or locked.
    #[error("cannot lock {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a data folder, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// The folder this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Locks `dir` (created if missing) for this process, or says who holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // The pid is for the message of a second process only: a failure to write it is harmless.
    let _ = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()));
    Ok(DirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("tinydfs-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = lock_dir(&dir).unwrap();
        assert_eq!(held.dir(), dir.as_path());
        // flock locks belong to the open file: a second open in this process conflicts too.
        match lock_dir(&dir) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        let message = lock_dir(&dir).unwrap_err().to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(held);
        // Released with its holder.
        let again = lock_dir(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
