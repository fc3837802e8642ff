//! The client's files in its config dir (`~/.config/ydht` on Linux, or
//! `--config-dir` / `YDHT_CONFIG_DIR`):
//!
//! - `config.json`: optional defaults for the service URLs
//!   (`{"gateway_url": "http://…", "users_url": "http://…"}`), written by hand.
//! - `credentials.json`: the login session (access and refresh tokens) and the
//!   default API key. Mode 0600 in a 0700 directory, replaced atomically.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::Exit;

/// File name of the URL defaults inside the config dir.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the tokens and default API key inside the config dir.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// File name of the lock that serializes token refreshes between processes.
pub const LOCK_FILE: &str = "credentials.lock";
/// An access token this close to its expiry is refreshed before use.
pub const REFRESH_MARGIN_SECS: u64 = 5;

/// The platform config dir for ydht (`~/.config/ydht` on Linux).
pub fn default_config_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("", "", "ydht").map(|dirs| dirs.config_dir().to_path_buf()).ok_or_else(|| {
        Exit::usage("cannot determine a home directory for the config dir; pass --config-dir or set YDHT_CONFIG_DIR")
            .into()
    })
}

/// `config.json`: URL defaults, used when neither a flag nor an environment variable gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Default for `--gateway`.
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// Default for `--users`.
    #[serde(default)]
    pub users_url: Option<String>,
}

impl ConfigFile {
    /// Reads `dir/config.json`; a missing file is an empty config, a malformed one a usage error.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(CONFIG_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                Exit::usage(format!(
                    "config file {} is invalid: {error}; expected {{\"gateway_url\": \"http://…\", \"users_url\": \"http://…\"}}",
                    path.display()
                ))
                .into()
            }),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }
}

/// Everything kept in `credentials.json`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The login session, if logged in.
    #[serde(default)]
    pub session: Option<Session>,
    /// The default API key for `kv`, set by `apikey create --use`.
    #[serde(default)]
    pub api_key: Option<StoredApiKey>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("session", &self.session).field("api_key", &self.api_key).finish()
    }
}

/// A login session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The users service that issued the tokens.
    pub users_url: String,
    /// The JWT sent as `Authorization: Bearer`.
    pub access_token: String,
    /// The single-use token that buys the next pair.
    pub refresh_token: String,
    /// When the access token expires (Unix seconds).
    pub access_expires_at: u64,
    /// Who is logged in.
    pub user_id: i64,
    /// Their email.
    pub email: String,
    /// Their user name.
    pub username: String,
}

impl Session {
    /// Whether the access token is expired or about to expire at `now` (Unix seconds).
    pub fn needs_refresh(&self, now: u64) -> bool {
        now + REFRESH_MARGIN_SECS >= self.access_expires_at
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("users_url", &self.users_url)
            .field("access_token", &"<hidden>")
            .field("refresh_token", &"<hidden>")
            .field("access_expires_at", &self.access_expires_at)
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("username", &self.username)
            .finish()
    }
}

/// The default API key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApiKey {
    /// Its id at the users service (so `apikey revoke` can forget it).
    pub id: i64,
    /// Its display prefix.
    pub prefix: String,
    /// The full key.
    pub key: String,
}

impl fmt::Debug for StoredApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredApiKey").field("id", &self.id).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The credentials file at a path.
#[derive(Debug, Clone)]
pub struct CredentialsStore {
    path: PathBuf,
}

impl CredentialsStore {
    /// The store inside `config_dir`.
    pub fn new(config_dir: &Path) -> Self {
        Self { path: config_dir.join(CREDENTIALS_FILE) }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored credentials; empty when the file does not exist.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                Exit::usage(format!(
                    "credentials file {} is damaged ({error}); delete it and run `ydht login`",
                    self.path.display()
                ))
                .into()
            }),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(Credentials::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read credentials file {}", self.path.display())),
        }
    }

    /// Writes `credentials` atomically (temp file of mode 0600, fsync, rename) in a
    /// 0700 directory; removes the file when there is nothing left to keep.
    pub fn save(&self, credentials: &Credentials) -> anyhow::Result<()> {
        if credentials.session.is_none() && credentials.api_key.is_none() {
            return match fs::remove_file(&self.path) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    Err(error).with_context(|| format!("cannot remove {}", self.path.display()))
                }
                _ => Ok(()),
            };
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let temp = dir.join(format!(".{CREDENTIALS_FILE}.{}.tmp", std::process::id()));
        let text = serde_json::to_vec_pretty(credentials).context("cannot encode credentials")?;
        let write = || -> std::io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp)?;
            #[cfg(unix)]
            {
                // The mode above applies only to new files; make sure of it for a leftover one.
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        };
        write().map_err(|error| {
            let _ = fs::remove_file(&temp);
            Exit::usage(format!(
                "cannot write credentials file {}: {error}; choose another dir with --config-dir or YDHT_CONFIG_DIR",
                self.path.display()
            ))
            .into()
        })
    }

    /// Takes the exclusive refresh lock (waiting for another `ydht` process to
    /// release it). Refresh tokens are single use, and presenting a used one
    /// revokes the session, so two processes must never refresh at once.
    pub fn lock(&self) -> anyhow::Result<RefreshLock> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).with_context(|| format!("cannot open lock file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a file descriptor this function owns; released when `file` is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                let error = std::io::Error::last_os_error();
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(RefreshLock { _file: file })
    }

    /// Loads, changes and saves in one step.
    pub fn update(&self, change: impl FnOnce(&mut Credentials)) -> anyhow::Result<Credentials> {
        let mut credentials = self.load()?;
        change(&mut credentials);
        self.save(&credentials)?;
        Ok(credentials)
    }
}

/// Holds the refresh lock until dropped.
#[derive(Debug)]
pub struct RefreshLock {
    _file: fs::File,
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| {
        Exit::usage(format!(
            "cannot create config dir {}: {error}; choose another with --config-dir or YDHT_CONFIG_DIR",
            dir.display()
        ))
        .into()
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            users_url: "http://127.0.0.1:8081".into(),
            access_token: "access-secret".into(),
            refresh_token: "refresh-secret".into(),
            access_expires_at: 1_000,
            user_id: 7,
            email: "a@example.com".into(),
            username: "alice".into(),
        }
    }

    #[test]
    fn credentials_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialsStore::new(&dir.path().join("nested/ydht"));
        assert_eq!(store.load().unwrap(), Credentials::default());
        let credentials = Credentials {
            session: Some(session()),
            api_key: Some(StoredApiKey { id: 3, prefix: "ydht_abc".into(), key: "ydht_abcdef".into() }),
        };
        store.save(&credentials).unwrap();
        assert_eq!(store.load().unwrap(), credentials);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(store.path().parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let only_key = store.update(|credentials| credentials.session = None).unwrap();
        assert!(only_key.session.is_none() && only_key.api_key.is_some());
        store.update(|credentials| credentials.api_key = None).unwrap();
        assert!(!store.path().exists(), "an empty credentials file is removed");
    }

    #[cfg(unix)]
    #[test]
    fn the_refresh_lock_is_exclusive_until_dropped() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialsStore::new(dir.path());
        let try_lock = || {
            let file = OpenOptions::new().write(true).open(dir.path().join(LOCK_FILE)).unwrap();
            // SAFETY: flock(2) on a descriptor owned by `file`.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        };
        let held = store.lock().unwrap();
        assert!(!try_lock(), "a second holder is refused while the lock is held");
        drop(held);
        assert!(try_lock(), "the lock is free once dropped");
    }

    #[test]
    fn debug_output_hides_tokens_and_keys() {
        let credentials = Credentials {
            session: Some(session()),
            api_key: Some(StoredApiKey { id: 3, prefix: "ydht_abc".into(), key: "ydht_abcdef".into() }),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("access-secret") && !text.contains("refresh-secret") && !text.contains("ydht_abcdef"));
        assert!(text.contains("alice"));
    }

    #[test]
    fn damaged_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CREDENTIALS_FILE), b"{not json").unwrap();
        let error = CredentialsStore::new(dir.path()).load().unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        assert!(error.to_string().contains("ydht login"));
        fs::write(dir.path().join(CONFIG_FILE), br#"{"gateway": "x"}"#).unwrap();
        let error = ConfigFile::load(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
    }

    #[test]
    fn config_file_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ConfigFile::load(dir.path()).unwrap(), ConfigFile::default());
        fs::write(dir.path().join(CONFIG_FILE), br#"{"gateway_url": "http://g:1"}"#).unwrap();
        assert_eq!(ConfigFile::load(dir.path()).unwrap().gateway_url.as_deref(), Some("http://g:1"));
    }

    #[test]
    fn tokens_are_refreshed_shortly_before_expiry() {
        let session = session();
        assert!(!session.needs_refresh(900));
        assert!(session.needs_refresh(996));
        assert!(session.needs_refresh(2_000));
    }
}
