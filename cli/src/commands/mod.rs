//! One module per command family; each takes the global options and its clap arguments.

pub mod archive;
pub mod auth;
pub mod build;
pub mod commit;
pub mod container_inspect;
pub mod containers;
pub mod exec;
pub mod files;
pub mod images;
pub mod info;
pub mod inspect;
pub mod mount;
pub mod ps;
pub mod pull;
pub mod push;
pub mod run;
pub mod system;
pub mod volume;

use std::io::Write;
use std::path::Path;

use crate::store::Store;
use crate::Global;
use strata_engine::containers::Containers;

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

/// How a command's error is introduced: docker says `Error response from daemon:` for what
/// its daemon refused, `Error:` for what the client did.
#[derive(Clone, Copy)]
pub enum Prefix {
    Daemon,
    Plain,
}

/// A command's exit status: 0, or 1 with its error on stderr.
pub fn report(r: anyhow::Result<()>, prefix: Prefix) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            match prefix {
                Prefix::Daemon => eprintln!("Error response from daemon: {e:#}"),
                Prefix::Plain => eprintln!("Error: {e:#}"),
            }
            1
        }
    }
}

/// The store, cleaned of dead monitors' leftovers.
pub fn open(global: &Global) -> (Store, Containers) {
    let store = Store::new(&global.root);
    crate::monitor::cleanup_stale(&store);
    let c = Containers::new(&store);
    (store, c)
}

/// Writes to `path` through a temp file beside it (mode 0600), renamed over it once
/// complete, as docker's `save -o` and `export -o`: a failed write leaves no half file, and
/// an earlier file stays.
pub fn write_file_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = crate::store::fsutil::temp_name(dir, &stem);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = write(&mut file).and_then(|()| {
        file.sync_all()
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
