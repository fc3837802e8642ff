//! Build-time inputs:
//! - rebuilds the crate when a migration changes (`sqlx::migrate!` embeds the files of
//!   `migrations/` at compile time but cannot tell cargo to watch them);
//! - `YDHT_COMMIT`: the git commit the binary is built from (`ydht --version` shows it), or
//!   `unknown` outside a git checkout (a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=YDHT_COMMIT={commit}");
    // Watch what moves HEAD: the HEAD file, the branch it points to, packed refs. Only files that
    // exist are named (a missing one would rerun this script on every build).
    let git = Path::new(".git");
    let mut watched = vec![git.join("HEAD"), git.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        watched.push(git.join(reference));
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
