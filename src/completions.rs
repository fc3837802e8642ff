//! `ydht completions`: shell completion scripts generated from the clap tree
//! (handed in by [`crate::cli`], so this module does not depend back on it).
//! The generated files are committed in `completions/`; a test fails when they
//! are out of date (regenerate with `cargo run -- completions --dir completions`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap_complete::{Generator, Shell};

use crate::error::Exit;

/// Arguments of `ydht completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum, required_unless_present = "dir")]
    pub shell: Option<Shell>,

    /// Write the files for every shell into this directory instead of printing
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Every shell we ship completions for, in a stable order.
pub const SHELLS: [Shell; 5] = [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell, Shell::Elvish];

/// The completion script for `shell`, for the command tree `command`.
pub fn generate(shell: Shell, mut command: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "ydht", &mut out);
    out
}

/// The file name clap_complete uses for `shell` (`ydht.bash`, `_ydht`, …).
pub fn file_name(shell: Shell) -> String {
    shell.file_name("ydht")
}

impl CompletionsArgs {
    /// Prints one script or writes them all, for the command tree `command`.
    pub fn run(self, command: clap::Command) -> anyhow::Result<()> {
        if let Some(dir) = self.dir {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for shell in SHELLS {
                let path = dir.join(file_name(shell));
                std::fs::write(&path, generate(shell, command.clone()))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            return Ok(());
        }
        let shell = self.shell.ok_or_else(|| Exit::usage("name a shell or pass --dir"))?;
        use std::io::Write;
        std::io::stdout().write_all(&generate(shell, command)).context("cannot write to stdout")?;
        Ok(())
    }
}
