//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the
//! files of `migrations/` at compile time but cannot tell cargo to watch them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
