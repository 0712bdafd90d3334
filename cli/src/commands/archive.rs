//! `save` and `load`: images as a tar archive. strata-image's `archive` writes and reads
//! it; this opens the files (a temp file renamed into place for `save -o`, as docker),
//! refuses a terminal, and prints docker's lines.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use strata_image::archive::{self, LoadEvent};

use crate::reference::Reference;
use crate::store::image::Image;
use crate::store::Store;
use crate::Global;

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images (names or IDs)
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn save(global: &Global, args: SaveArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let table = store.table()?;
    // One entry per image, with every name asked for it (docker's manifest.json).
    let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
    for name in &args.images {
        let found = store
            .find(&table, name)
            .map_err(|_| anyhow::anyhow!("No such image: {}", Store::familiar(name)))?;
        let tags = match &found {
            crate::store::image::Found::Tag(r, _) => vec![r.clone()],
            crate::store::image::Found::Digest(..) => Vec::new(),
            crate::store::image::Found::Id(img) => img.tags.clone(),
        };
        let img = found.image().clone();
        match images.iter_mut().find(|(i, _)| i.id == img.id) {
            Some((_, names)) => {
                for t in tags {
                    if !names.contains(&t) {
                        names.push(t);
                    }
                }
            }
            None => images.push((img, tags)),
        }
    }
    match &args.output {
        Some(p) => super::write_file_atomically(p, |file| {
            Ok(archive::write_archive(
                &store,
                &images,
                Box::new(std::io::BufWriter::new(file)),
            )?)
        }),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            Ok(archive::write_archive(
                &store,
                &images,
                Box::new(std::io::stdout().lock()),
            )?)
        }
    }
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn load(global: &Global, args: LoadArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let mut input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!("requested load from stdin, but stdin is empty");
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let events = archive::load(&store, &mut input)?;
    if args.quiet {
        return Ok(());
    }
    let mut lines = String::new();
    for e in events {
        lines.push_str(&match e {
            LoadEvent::Renamed { name, old } => format!(
                "The image {} already exists, renaming the old one with ID {old} to empty \
                 string\n",
                name.familiar()
            ),
            LoadEvent::Loaded(name) => format!("Loaded image: {}\n", name.familiar()),
            LoadEvent::LoadedId(id) => format!("Loaded image ID: {id}\n"),
        });
    }
    super::print(lines.as_bytes())
}
