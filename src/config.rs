//! Settings shared by every server: where data lives, which address to bind,
//! and the secrets that are generated once and kept in the data dir.
//!
//! Every flag also reads an environment variable (clap's `env`), so the
//! layering is: built-in default → environment → command-line flag.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::error::Exit;

/// Flags every `ydht serve …` command accepts.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]
    #[arg(long, env = "YDHT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Address to bind; use 0.0.0.0 to accept connections from other machines
    #[arg(long, env = "YDHT_HOST", default_value = "127.0.0.1", global = true)]
    pub host: String,

    /// Shared secret guarding internal endpoints [default: generated once into the data dir]
    #[arg(long, env = "YDHT_CLUSTER_SECRET", hide_env_values = true, global = true)]
    pub cluster_secret: Option<String>,

    /// PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)
    #[arg(long, env = "YDHT_TLS_CERT", value_name = "PEM", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, env = "YDHT_TLS_KEY", value_name = "PEM", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Log lines as text, or as one JSON object per line (for log collectors)
    #[arg(long, env = "YDHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal)
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, message, fields and the spans (request ids)
    Json,
}

impl fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerArgs")
            .field("data_dir", &self.data_dir)
            .field("host", &self.host)
            .field("cluster_secret", &self.cluster_secret.as_ref().map(|_| "<hidden>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl ServerArgs {
    /// The data directory, created if missing; an actionable error if it cannot be.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        ensure_writable_dir(&dir)?;
        Ok(dir)
    }

    /// The TLS certificate and key to serve with, if `--tls-cert` and `--tls-key` are given
    /// (one without the other is a usage error).
    pub fn tls(&self) -> anyhow::Result<Option<crate::tls::TlsConfig>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => crate::tls::TlsConfig::load(cert, key).map(Some),
            (Some(_), None) => {
                Err(Exit::usage("--tls-cert needs --tls-key / YDHT_TLS_KEY (the certificate's private key)").into())
            }
            (None, Some(_)) => {
                Err(Exit::usage("--tls-key needs --tls-cert / YDHT_TLS_CERT (the certificate chain)").into())
            }
        }
    }

    /// The cluster secret: the flag / `YDHT_CLUSTER_SECRET`, else the one kept in the data dir.
    pub fn cluster_secret(&self, data_dir: &Path) -> anyhow::Result<Secret> {
        match &self.cluster_secret {
            Some(secret) if !secret.is_empty() => Ok(Secret::new(secret.clone())),
            _ => load_or_generate_secret(data_dir, CLUSTER_SECRET_FILE),
        }
    }
}

/// File name of the generated cluster secret inside the data dir.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";

/// The platform data dir for ydht (`~/.local/share/ydht` on Linux).
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("", "", "ydht").map(|dirs| dirs.data_dir().to_path_buf()).ok_or_else(|| {
        Exit::usage("cannot determine a home directory for the default data dir; pass --data-dir or set YDHT_DATA_DIR")
            .into()
    })
}

/// Mode of every directory ydht creates for its data: only its owner may enter it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every data file ydht creates: only its owner may read or write it.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700, whatever the umask
/// (directories that already exist keep their mode).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
    builder.create(dir)
}

/// Makes a file created through `options` get mode 0600, whatever the umask
/// (an existing file keeps its mode).
pub fn private_file(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, PRIVATE_FILE_MODE);
    options
}

/// Creates (or truncates) the file at `path` for writing, with mode 0600 when it is created.
pub fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    private_file(OpenOptions::new().write(true).create(true).truncate(true)).open(path)
}

/// Creates `dir` (mode 0700) if needed and checks that files can be created in it.
pub fn ensure_writable_dir(dir: &Path) -> anyhow::Result<()> {
    create_private_dir(dir).map_err(|error| {
        Exit::usage(format!(
            "cannot create data dir {}: {error}; choose another with --data-dir or YDHT_DATA_DIR",
            dir.display()
        ))
    })?;
    let probe = dir.join(".ydht-write-probe");
    match OpenOptions::new().create(true).truncate(true).write(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(error) => Err(Exit::usage(format!(
            "data dir {} is not writable: {error}; fix its permissions or choose another with --data-dir",
            dir.display()
        ))
        .into()),
    }
}

/// A secret string whose `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for signing or comparing — never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Reads the secret in `data_dir/name`, or generates 32 random bytes (hex)
/// into it with mode 0600. Two processes racing to create it agree on one.
pub fn load_or_generate_secret(data_dir: &Path, name: &str) -> anyhow::Result<Secret> {
    let path = data_dir.join(name);
    loop {
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim().to_string())),
            Ok(_) => {
                // A concurrent creator has not written it yet; wait for its content.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot read secret file {}", path.display())),
        }
        match private_file(OpenOptions::new().write(true).create_new(true)).open(&path) {
            Ok(mut file) => {
                let secret = random_hex(32);
                file.write_all(secret.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write secret file {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new secret (mode 0600)");
                return Ok(Secret::new(secret));
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error).with_context(|| format!("cannot create secret file {}", path.display())),
        }
    }
}

/// `bytes` bytes from the OS random generator, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random generator is unavailable");
    hex::encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate_secret(dir.path(), "s").unwrap();
        let second = load_or_generate_secret(dir.path(), "s").unwrap();
        assert_eq!(first, second);
        assert_eq!(first.expose().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("s")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(secret.matches(b"hunter2"));
        assert!(!secret.matches(b"hunter3"));
    }

    #[test]
    fn unwritable_data_dir_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let error = ensure_writable_dir(&file.join("sub")).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        assert!(error.to_string().contains("--data-dir"));
    }
}
