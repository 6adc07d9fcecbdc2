//! Chunkserver disks the nemesis can fill and fail: an ext4 file system in a sparse image file
//! of the cluster's folder, mounted through a loop device in the chunkserver's own mount
//! namespace.
//!
//! - Mounted by the chunkserver's command itself (`ip netns exec NS sh -c 'mount ... && exec
//!   tinydfs chunkserver ...'`): `ip netns exec` gives each process a mount namespace of its
//!   own, so a mount made in the root namespace would be copied into every node started after
//!   it and stay alive there after its chunkserver dies, and one made by another `ip netns exec`
//!   would be seen by nobody else. Mounted this way, the file system lives exactly as long as its
//!   chunkserver: killing the process unmounts it and frees its loop device (`-o loop` sets
//!   autoclear), also when the test itself is killed (nodes die with it). The test reaches the
//!   files through `/proc/<pid>/root`.
//! - Why ext4 and not tmpfs: a file system cannot be remounted read-only while a process holds a
//!   file open for writing (`mount -o remount,ro` answers EBUSY), and a chunkserver always
//!   holds its pack file so. An ext4 error can: the error that `trigger_fs_error` (sysfs)
//!   reports aborts the journal and, with `errors=remount-ro`, turns the file system read-only
//!   under its writers, as an error of a real disk does. Only a new mount, after `e2fsck`,
//!   makes it writable again.
//! - Full: [`Disk::fill`] allocates a filler file (fallocate, no bytes written) until ENOSPC.
//! - The image is as large as the free space where it lies: placement is weighted by free space,
//!   and the chunkserver should weigh like its peers on the plain folders. Sparse, it takes only
//!   what is written.

use crate::netns::run;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// An image never needs more than this: the test writes a few GB at most.
const MAX_SIZE: u64 = 1 << 40;
/// The filler's name on the disk.
const FILLER: &str = "chaos-filler";
/// A file written to learn whether the disk still takes writes.
const PROBE: &str = "chaos-probe";
/// How long the kernel may take to let go of a dead chunkserver's file system.
const RELEASE: Duration = Duration::from_secs(30);
/// How long the kernel may take to turn a file system read-only after an error.
const READ_ONLY: Duration = Duration::from_secs(5);

/// A chunkserver's disk: its image and where its chunkserver mounts it.
pub struct Disk {
    image: PathBuf,
    mount: PathBuf,
}

impl Disk {
    /// Makes an empty ext4 file system in `image` (sparse; as large as the free space there)
    /// and the folder `mount` it is to be mounted on.
    pub fn create(image: PathBuf, mount: PathBuf) -> Disk {
        let parent = image.parent().expect("an image in a folder");
        std::fs::create_dir_all(parent).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        let s = nix::sys::statvfs::statvfs(parent).unwrap();
        let size = (s.blocks_available() * s.fragment_size()).min(MAX_SIZE);
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .unwrap_or_else(|e| panic!("creating {}: {e}", image.display()));
        // No blocks reserved for root: the chunkserver runs as root and would get past a
        // filler that leaves them.
        run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-m", "0", "-T", "huge"])
            .arg(&image));
        Disk { image, mount }
    }

    /// The folder the chunkserver is given as its disk.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The arguments of `sh` that mount the disk, then exec `program` with `args`.
    pub fn wrap(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut a = vec![
            "-c".to_string(),
            r#"mount -o loop,errors=remount-ro "$1" "$2" && shift 2 && exec "$@""#.into(),
            "sh".into(),
            self.image.display().to_string(),
            self.mount.display().to_string(),
            program.into(),
        ];
        a.extend(args.iter().cloned());
        a
    }

    /// The mount as process `pid` sees it (from the root mount namespace).
    fn seen_by(&self, pid: u32) -> PathBuf {
        let inside = self.mount.strip_prefix("/").unwrap_or(&self.mount);
        Path::new(&format!("/proc/{pid}/root")).join(inside)
    }

    /// Bytes free for the chunkserver `pid` on its disk.
    pub fn free(&self, pid: u32) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.seen_by(pid)).unwrap();
        s.blocks_available() * s.fragment_size()
    }

    /// Fills the disk of chunkserver `pid` with a filler file until ENOSPC (adding to the
    /// filler if there is one); answers the bytes the filler holds.
    pub fn fill(&self, pid: u32) -> u64 {
        let path = self.seen_by(pid).join(FILLER);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        // Allocation stops at the first ENOSPC, partly done (ext4 keeps what it allocated):
        // smaller requests then take what is left between the chunkserver's own writes.
        for step in [MAX_SIZE as i64, 1 << 20, 4096] {
            loop {
                let at = f.metadata().unwrap().len() as i64;
                match nix::fcntl::fallocate(
                    f.as_raw_fd(),
                    nix::fcntl::FallocateFlags::empty(),
                    at,
                    step,
                ) {
                    Ok(()) => continue,
                    Err(nix::errno::Errno::ENOSPC) => break,
                    Err(e) => panic!("fallocate {}: {e}", path.display()),
                }
            }
        }
        f.metadata().unwrap().blocks() * 512
    }

    /// Deletes the filler.
    pub fn empty(&self, pid: u32) {
        let path = self.seen_by(pid).join(FILLER);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("deleting {}: {e}", path.display()));
    }

    /// Makes the disk of chunkserver `pid` fail: an ext4 error, after which the file system is
    /// read-only (and every write fails) until it is repaired and mounted again. Answers the
    /// loop device.
    pub fn fail(&self, pid: u32) -> String {
        let dev = self.device(pid);
        let name = Path::new(&dev).file_name().unwrap().to_string_lossy();
        let trigger = format!("/sys/fs/ext4/{name}/trigger_fs_error");
        std::fs::write(&trigger, "chaos: a failing disk")
            .unwrap_or_else(|e| panic!("writing {trigger}: {e}"));
        // The kernel turns the file system read-only a few milliseconds after the error. Known
        // by a write failing: recent kernels do not say so in statvfs's flags (ext4 marks
        // itself `emergency_ro` instead of setting the superblock read-only).
        let probe = self.seen_by(pid).join(PROBE);
        let deadline = Instant::now() + READ_ONLY;
        loop {
            if std::fs::write(&probe, b"?").is_err() {
                return dev;
            }
            let _ = std::fs::remove_file(&probe);
            assert!(
                Instant::now() < deadline,
                "{dev} still writable {} s after an ext4 error (not mounted errors=remount-ro?)",
                READ_ONLY.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The device mounted on the disk's folder in process `pid`'s mount namespace.
    fn device(&self, pid: u32) -> String {
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let mount = self.mount.display().to_string();
        // `id parent major:minor root mountpoint options ... - fstype source super-options`
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(mount.as_str()))
            .filter_map(|l| l.split(" - ").nth(1))
            .filter_map(|l| l.split(' ').nth(1))
            .next_back()
            .unwrap_or_else(|| panic!("nothing mounted on {mount} for process {pid}"))
            .to_string()
    }

    /// Whether no loop device holds the image any more (its file system is gone from the
    /// kernel).
    pub fn released(&self) -> bool {
        let out = Command::new("losetup").arg("-j").arg(&self.image).output();
        out.is_ok_and(|o| o.status.success() && o.stdout.is_empty())
    }

    /// Once its chunkserver is dead: waits until the kernel has let go of the file system,
    /// then checks and repairs it with `e2fsck`, as an operator does after a disk error.
    pub fn repair(&self) {
        let deadline = Instant::now() + RELEASE;
        while !self.released() {
            assert!(
                Instant::now() < deadline,
                "{} still attached to a loop device {} s after its chunkserver died",
                self.image.display(),
                RELEASE.as_secs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.image)
            .output()
            .unwrap_or_else(|e| panic!("cannot run e2fsck: {e}"));
        // 0: clean; 1: errors corrected; 2: corrected, reboot (a mounted root file system).
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "e2fsck {} failed ({}): {}{}",
            self.image.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Waits (up to [`RELEASE`], without panicking: clean-up) until the image is released;
    /// reports it if not.
    pub fn wait_released(&self) {
        let deadline = Instant::now() + RELEASE;
        while !self.released() {
            if Instant::now() > deadline {
                eprintln!(
                    "disk clean-up: {} still attached to a loop device",
                    self.image.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
