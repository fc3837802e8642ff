//! A small tmpfs mounted over a directory (as root), to run a node out of disk
//! space on purpose; unmounted when dropped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
pub struct Tmpfs {
    path: PathBuf,
}

/// The file [`Tmpfs::fill`] writes.
const FILLER: &str = "filler";

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing), or says why it cannot.
    pub fn mount(path: &Path, bytes: u64) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".to_string());
        }
        fs::create_dir_all(path).map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(Tmpfs { path: path.to_path_buf() })
    }

    /// Writes a file until the file system is full; returns the bytes written.
    pub fn fill(&self) -> u64 {
        let mut file = fs::File::create(self.path.join(FILLER)).expect("create the filler file");
        let chunk = vec![0xa5u8; 4096];
        let mut written = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(count) => written += count as u64,
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => panic!("filling {}: {error}", self.path.display()),
            }
        }
        written
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        fs::remove_file(self.path.join(FILLER)).expect("remove the filler file");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status().is_ok_and(|status| status.success());
        if !unmounted {
            // Still busy (a process dying): detach it now, the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
