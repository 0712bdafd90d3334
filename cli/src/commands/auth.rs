//! `login` and `logout`: credentials checked against the registry, then kept in the
//! docker-style `config.json` (see `registry::auth::AuthFile`).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::reference::{Reference, DEFAULT_DOMAIN};
use crate::registry::auth::{AuthFile, Credentials};
use crate::registry::Client;
use crate::Global;

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host, with its port if any (default: docker.io)
    pub server: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Allow plain HTTP to this registry
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Registry host, with its port if any (default: docker.io)
    pub server: Option<String>,
}

/// `https://host:5000/v2/` → `host:5000`; docker hub's names → `docker.io`.
fn server_domain(server: Option<&str>) -> Result<String> {
    let Some(s) = server else {
        return Ok(DEFAULT_DOMAIN.to_string());
    };
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_lowercase();
    if host.is_empty() {
        bail!("invalid registry {s:?}");
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DEFAULT_DOMAIN.to_string(),
        _ => host,
    })
}

pub fn login(global: &Global, args: LoginArgs) -> Result<()> {
    let domain = server_domain(args.server.as_deref())?;
    let stdin = std::io::stdin();
    let username = match args.username {
        Some(u) => u,
        None if stdin.is_terminal() => prompt("Username: ", true)?,
        None => bail!("Cannot perform an interactive login from a non TTY device; use -u"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if stdin.is_terminal() => prompt("Password: ", false)?,
        (None, false) => {
            bail!("Cannot perform an interactive login from a non TTY device; use --password-stdin")
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("a username and a password are required");
    }
    let creds = Credentials { username, password };
    // The API host for the domain, as a pull would use it.
    let host = Reference::parse(&format!("{domain}/x"))
        .map(|r| r.registry_host().to_string())
        .unwrap_or_else(|_| domain.clone());
    let client = Client::for_repo(&domain, &host, "", args.insecure, Some(creds.clone()))?;
    client
        .check_login()
        .with_context(|| format!("logging in to {domain}"))?;
    AuthFile::new(&global.root)
        .store(&domain, &creds)
        .context("saving credentials")?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(global: &Global, args: LogoutArgs) -> Result<()> {
    let domain = server_domain(args.server.as_deref())?;
    if AuthFile::new(&global.root).remove(&domain)? {
        println!("Removing login credentials for {domain}");
    } else {
        println!("Not logged in to {domain}");
    }
    Ok(())
}

/// Reads a line from the terminal, without echo for passwords.
fn prompt(label: &str, echo: bool) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let stdin = std::io::stdin();
    let saved = if echo {
        None
    } else {
        let t = tcgetattr(&stdin).context("reading terminal settings")?;
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning off echo")?;
        Some(t)
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &t);
        eprintln!();
    }
    r.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(server_domain(None).unwrap(), "docker.io");
        assert_eq!(
            server_domain(Some("https://index.docker.io/v1/")).unwrap(),
            "docker.io"
        );
        assert_eq!(
            server_domain(Some("127.0.0.1:5055")).unwrap(),
            "127.0.0.1:5055"
        );
        assert_eq!(
            server_domain(Some("http://Reg.example:5000/v2/")).unwrap(),
            "reg.example:5000"
        );
    }
}
