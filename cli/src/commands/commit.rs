//! Authoring images from containers and tars: `commit`, `export`, `import` (strata-engine's
//! `commit` module and strata-image's `import` do the work), and the `__tar` helper a
//! rootless commit or export runs.

use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};
use strata_engine::commit::{self, CommitOptions, TarKind};
use strata_image::import::{self, ImportOptions};

use super::{open, report, Prefix};
use crate::reference::Reference;
use crate::store::Store;
use crate::Global;

#[derive(Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short, long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    /// The name: REPOSITORY or REPOSITORY:TAG
    pub repository: Option<String>,
}

/// docker's parse of a `REPOSITORY[:TAG]` argument (a digest is refused).
fn parse_tag(s: Option<&str>) -> Result<Option<Reference>> {
    let Some(s) = s else { return Ok(None) };
    let r = Reference::parse(s).map_err(|_| anyhow::anyhow!("invalid reference format"))?;
    if r.digest.is_some() {
        bail!("invalid reference format: a digest is no tag");
    }
    Ok(Some(r))
}

pub fn commit(global: &Global, args: CommitArgs) -> i32 {
    let r = (|| -> Result<()> {
        let tag = parse_tag(args.repository.as_deref())?;
        let (store, c) = open(global);
        let rec = c.find(&args.container)?;
        let opts = CommitOptions {
            author: args.author.clone(),
            message: args.message.clone(),
            changes: args.change.clone(),
            pause: args.pause,
            tag,
        };
        let written =
            commit::commit(&store, &rec, &opts).map_err(|e| anyhow::anyhow!(e.chain()))?;
        super::print(format!("{}\n", written.id).as_bytes())
    })();
    report(r, Prefix::Daemon)
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

/// Writes to `path` through a temp file beside it, renamed over it once complete (as `save
/// -o`): a failed export leaves no half file.
fn write_file_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = crate::store::fsutil::temp_name(dir, &stem);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = write(&mut file).and_then(|()| {
        file.sync_all()
            .with_context(|| format!("writing {}", path.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn export(global: &Global, args: ExportArgs) -> i32 {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return report(
            Err(anyhow::anyhow!(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect"
            )),
            Prefix::Plain,
        );
    }
    let r = (|| -> Result<()> {
        let (store, c) = open(global);
        let rec = c.find(&args.container)?;
        let copy = |out: &mut dyn Write| -> Result<()> {
            commit::with_tar(&store, &rec, TarKind::Export, &mut |tar| {
                match std::io::copy(tar, out) {
                    // `export | head`: done.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    r => r
                        .map(drop)
                        .map_err(|source| strata_engine::Error::TarStream {
                            kind: "export",
                            id: rec.id.clone(),
                            source,
                        }),
                }
            })
            .map_err(|e| anyhow::anyhow!(e.chain()))
        };
        match &args.output {
            Some(p) => write_file_atomically(p, |f| copy(f)),
            None => copy(&mut std::io::stdout().lock()),
        }
    })();
    report(r, Prefix::Daemon)
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    pub message: Option<String>,
    /// file|URL|-
    pub source: String,
    /// The name: REPOSITORY or REPOSITORY:TAG
    pub repository: Option<String>,
}

pub fn import(global: &Global, args: ImportArgs) -> i32 {
    let r = (|| -> Result<()> {
        let opts = ImportOptions {
            changes: args.change.clone(),
            message: args.message.clone(),
            tag: parse_tag(args.repository.as_deref())?,
        };
        // Bad changes are refused before a download or a read of stdin.
        import::check_changes(&opts.changes).map_err(|e| anyhow::anyhow!(e.chain()))?;
        let store = Store::new(&global.root);
        let mut input: Box<dyn Read> = if args.source == "-" {
            if std::io::stdin().is_terminal() {
                bail!("requested import from stdin, but stdin is a terminal");
            }
            Box::new(std::io::stdin().lock())
        } else if import::is_url(&args.source) {
            import::open_url(&args.source).map_err(|e| anyhow::anyhow!(e.chain()))?
        } else {
            Box::new(File::open(&args.source).with_context(|| format!("open {}", args.source))?)
        };
        let written = import::import(&store, &mut input, &args.source, &opts)
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
        super::print(format!("{}\n", written.id).as_bytes())
    })();
    report(r, Prefix::Daemon)
}

#[derive(Args)]
pub struct TarHelperArgs {
    /// `changes` or `export`
    pub kind: String,
    pub id: String,
}

/// `strata __tar changes|export ID` (internal; see strata-engine's `commit` module).
pub fn tar_helper(global: &Global, args: TarHelperArgs) -> i32 {
    let r = (|| -> Result<()> {
        let kind = TarKind::parse(&args.kind).context("the kind is changes or export")?;
        commit::tar_helper_main(&global.root, kind, &args.id)
            .map_err(|e| anyhow::anyhow!(e.chain()))
    })();
    report(r, Prefix::Plain)
}
