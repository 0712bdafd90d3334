//! One module per command family; each takes the global options and its clap arguments.

pub mod archive;
pub mod auth;
pub mod container_inspect;
pub mod containers;
pub mod exec;
pub mod files;
pub mod images;
pub mod inspect;
pub mod mount;
pub mod ps;
pub mod pull;
pub mod run;
pub mod run_flags;
pub mod system;

use std::io::Write;

/// Writes to stdout, treating a closed pipe (`strata images | head`) as done.
pub fn print(out: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// docker's confirmation prompt: `question [y/N] ` on stdout, then one line of stdin; true
/// only for `y` or `Y` (docker takes nothing else, not even `yes`).
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    write!(out, "{question} [y/N] ")?;
    out.flush()?;
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case("y"))
}
