//! The committed completion scripts in `completions/` must match the CLI.

use clap::CommandFactory;
use ydht::cli::Cli;
use ydht::completions::{SHELLS, file_name, generate};

#[test]
fn committed_completions_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    for shell in SHELLS {
        let path = dir.join(file_name(shell));
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generate(shell, Cli::command()),
            "{} is out of date; regenerate with `cargo run -- completions --dir completions`",
            path.display()
        );
    }
}
