//! `ydht man`: manual pages generated from the clap tree with clap_mangen
//! (hidden from `--help`; packagers run `ydht man --dir DIR`). The tree is handed
//! in by [`crate::cli`], so this module does not depend back on it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `ydht man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write `ydht.1` and one page per subcommand (`ydht-kv-put.1`, …) into this directory instead of printing `ydht.1`
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The roff source of `ydht(1)` for the command tree `command`.
pub fn render(command: clap::Command) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page).expect("rendering into memory cannot fail");
    page
}

impl ManArgs {
    /// Prints `ydht(1)` or writes every page, for the command tree `command`.
    pub fn run(self, command: clap::Command) -> anyhow::Result<()> {
        if let Some(dir) = self.dir {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            return clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()));
        }
        crate::client::output::print_bytes(&render(command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_page_documents_commands_and_exit_codes() {
        let page = String::from_utf8(render(Cli::command())).unwrap();
        assert!(page.contains("\n.TH ydht 1"), "not a roff page");
        for expected in ["signup", "apikey", "status", "Exit codes", "Client options", "YDHT_OUTPUT"] {
            assert!(page.contains(expected), "{expected} missing from the man page");
        }
    }

    #[test]
    fn every_subcommand_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        ManArgs { dir: Some(dir.path().to_path_buf()) }.run(Cli::command()).unwrap();
        for name in ["ydht.1", "ydht-kv.1", "ydht-kv-put.1", "ydht-apikey-create.1", "ydht-status.1"] {
            assert!(dir.path().join(name).exists(), "{name} was not written");
        }
        let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(page("ydht-kv-get.1").contains("YDHT_API_KEY"), "kv get documents its API key");
        assert!(!page("ydht-top.1").contains("api\\-key"), "top takes no API key");
        assert!(page("ydht-top.1").contains("YDHT_GATEWAY_URL"));
    }
}
