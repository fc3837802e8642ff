//! `ydht signup`, `login`, `logout`, `whoami`: the account and its login
//! session. Passwords are prompted without echo, or read with `--password-stdin`.

use std::io::{IsTerminal, Read};

use clap::Args;
use reqwest::Method;
use serde_json::json;

use super::api::{LoginRequest, SignupRequest, TokenResponse, User, decode};
use super::credentials::{Session, unix_now};
use super::output::{format_timestamp, print_json, print_line, table, yes_no};
use super::{Context, UsersClient};
use crate::error::{Exit, exit};

/// Largest password read from stdin.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// Arguments of `ydht signup`.
#[derive(Args, Debug)]
pub struct SignupArgs {
    /// Account email
    #[arg(long)]
    pub email: String,

    /// Account name: 3–32 letters, digits, `_` or `-`
    #[arg(long)]
    pub username: String,

    /// Read the password from stdin instead of prompting (for scripts)
    #[arg(long)]
    pub password_stdin: bool,
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

/// Arguments of `ydht login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Account email
    #[arg(long)]
    pub email: String,

    /// Read the password from stdin instead of prompting (for scripts)
    #[arg(long)]
    pub password_stdin: bool,
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

/// Arguments of `ydht logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Also forget the default API key stored by `apikey create --use`
    #[arg(long)]
    pub all: bool,
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

/// Arguments of `ydht whoami`.
#[derive(Args, Debug)]
pub struct WhoamiArgs {
    /// The users service and the config dir.
    #[command(flatten)]
    pub client: UsersClient,
}

impl SignupArgs {
    /// Creates the account, then logs in with it.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let password = read_password(self.password_stdin, true)?;
        let request = SignupRequest { email: self.email.clone(), username: self.username, password: password.clone() };
        let user = context.api.signup(&context.users, &request).await?;
        let session = login(context, &self.email, password).await?;
        if context.json() {
            return print_json(
                &json!({ "user": user, "logged_in": true, "access_expires_at": session.access_expires_at }),
            );
        }
        print_line(&format!("Signed up and logged in as {} <{}> (user {}).", user.username, user.email, user.id))?;
        print_line("Next: `ydht apikey create --name NAME --use`, then `ydht kv put KEY VALUE`.")
    }
}

impl LoginArgs {
    /// Logs in and stores the tokens.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let password = read_password(self.password_stdin, false)?;
        let session = login(context, &self.email, password).await?;
        if context.json() {
            return print_json(&json!({
                "user": { "id": session.user_id, "email": session.email, "username": session.username },
                "access_expires_at": session.access_expires_at,
            }));
        }
        print_line(&format!(
            "Logged in as {} <{}> (user {}); tokens stored in {}.",
            session.username,
            session.email,
            session.user_id,
            context.store.path().display()
        ))
    }
}

impl LogoutArgs {
    /// Revokes the session at the users service and forgets the tokens.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let credentials = context.store.load()?;
        let had_session = credentials.session.is_some();
        let revoked = if had_session {
            context
                .authorized(|token| context.api.bearer(Method::POST, &context.users, &["logout"], token))
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        let forgot_key = self.all && credentials.api_key.is_some();
        context.store.update(|credentials| {
            credentials.session = None;
            if self.all {
                credentials.api_key = None;
            }
        })?;
        match revoked {
            // A session the server no longer knows is as good as revoked.
            Err(error) if crate::error::exit_code_of(&error) != exit::AUTH => {
                return Err(error.context("forgot the local tokens, but could not revoke the session"));
            }
            _ => {}
        }
        let kept_key = !self.all && credentials.api_key.is_some();
        if context.json() {
            return print_json(
                &json!({ "logged_out": had_session, "forgot_api_key": forgot_key, "kept_api_key": kept_key }),
            );
        }
        print_line(if had_session { "Logged out." } else { "Not logged in." })?;
        if kept_key {
            print_line("The default API key is still stored for `ydht kv`; `ydht logout --all` forgets it too.")?;
        }
        Ok(())
    }
}

impl WhoamiArgs {
    /// Shows the logged-in user (asks the users service, refreshing the token if needed).
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let response =
            context.authorized(|token| context.api.bearer(Method::GET, &context.users, &["me"], token)).await?;
        let user: User = decode(&context.users, response).await?;
        let default_key = context.store.load()?.api_key.map(|key| key.prefix);
        if context.json() {
            return print_json(&json!({
                "user": user,
                "users_url": context.users.display,
                "default_api_key_prefix": default_key,
            }));
        }
        let mut rows = table(["FIELD", "VALUE"]);
        rows.add_row(["user id".to_string(), user.id.to_string()]);
        rows.add_row(["username".to_string(), user.username]);
        rows.add_row(["email".to_string(), user.email]);
        rows.add_row(["active".to_string(), yes_no(user.is_active, "no").to_string()]);
        rows.add_row(["created".to_string(), format_timestamp(user.created_at.as_ref())]);
        rows.add_row(["users service".to_string(), context.users.display.clone()]);
        rows.add_row(["default API key".to_string(), default_key.map_or_else(|| "-".to_string(), |p| format!("{p}…"))]);
        print_line(&rows.to_string())
    }
}

/// Logs in and stores the new session; returns it.
async fn login(context: &Context, email: &str, password: String) -> anyhow::Result<Session> {
    let tokens = context.api.login(&context.users, &LoginRequest { email: email.to_string(), password }).await?;
    let session = session_from(context, tokens)?;
    context.store.update(|credentials| credentials.session = Some(session.clone()))?;
    Ok(session)
}

fn session_from(context: &Context, tokens: TokenResponse) -> anyhow::Result<Session> {
    let user = tokens.user.ok_or_else(|| {
        Exit::new(
            exit::UNAVAILABLE,
            format!("the users service at {} sent no user with its tokens", context.users.display),
        )
    })?;
    Ok(Session {
        users_url: context.users.display.clone(),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        access_expires_at: unix_now() + tokens.expires_in,
        user_id: user.id,
        email: user.email,
        username: user.username,
    })
}

/// The password: all of stdin without its final newline (`--password-stdin`), or
/// prompted on the terminal without echo (twice when `confirm`).
fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_PASSWORD_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|error| Exit::usage(format!("cannot read the password from stdin: {error}")))?;
        return password_from_stdin_text(text);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Exit::usage(
            "stdin is not a terminal to prompt for the password; pipe it in with --password-stdin",
        )
        .into());
    }
    let prompt = |label: &str| {
        rpassword::prompt_password(label).map_err(|error| Exit::usage(format!("cannot read the password: {error}")))
    };
    let password = prompt("Password: ")?;
    if confirm && prompt("Repeat password: ")? != password {
        return Err(Exit::usage("the passwords do not match").into());
    }
    Ok(password)
}

fn password_from_stdin_text(mut text: String) -> anyhow::Result<String> {
    if text.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(Exit::usage(format!("the password on stdin is longer than {MAX_PASSWORD_BYTES} bytes")).into());
    }
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(Exit::usage(
            "--password-stdin got an empty password; pipe it in, e.g. `echo \"$PW\" | ydht login …`",
        )
        .into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_passwords_lose_only_their_final_newline() {
        assert_eq!(password_from_stdin_text("secret pw\n".into()).unwrap(), "secret pw");
        assert_eq!(password_from_stdin_text("secret\r\n".into()).unwrap(), "secret");
        assert_eq!(password_from_stdin_text(" spaced \n\n".into()).unwrap(), " spaced \n");
        let error = password_from_stdin_text("\n".into()).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::USAGE);
        let error = password_from_stdin_text("x".repeat(5000)).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::USAGE);
    }
}
