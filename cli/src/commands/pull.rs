//! `strata pull`.

use anyhow::Result;
use clap::Args;

use crate::oci::PlatformSpec;
use crate::progress::Progress;
use crate::pull::{pull, PullOptions};
use crate::reference::Reference;
use crate::registry::auth::AuthFile;
use crate::store::Store;
use crate::Global;

#[derive(Args)]
pub struct PullArgs {
    /// Image reference: NAME, NAME:TAG or NAME@DIGEST
    pub reference: String,
    /// Platform to pull from an image index, os/arch[/variant] (default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference
    #[arg(short, long)]
    pub quiet: bool,
    /// Allow plain HTTP to this registry
    #[arg(long)]
    pub insecure: bool,
    /// Download every layer whole, also completing an image pulled lazily (by default
    /// eStargz and zstd:chunked layers are pulled lazily: their files are fetched when first
    /// read)
    #[arg(long)]
    pub full: bool,
}

pub fn run(global: &Global, args: PullArgs) -> Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => PlatformSpec::parse(p)?,
        None => PlatformSpec::host(),
    };
    let store = Store::new(&global.root);
    let progress = Progress::new(args.quiet);
    let given = Reference::parse_name_only(&args.reference)?;
    if given.tag.is_none() && given.digest.is_none() {
        progress.line("Using default tag: latest");
    }
    progress.line(&format!(
        "{}: Pulling from {}",
        reference.manifest_ref(),
        reference.path
    ));
    let pulled = pull(
        &store,
        &AuthFile::new(&global.root),
        &reference,
        &PullOptions {
            platform,
            explicit_platform: args.platform.is_some(),
            insecure: args.insecure,
            full: args.full,
        },
        &progress,
    )?;
    let mut out = String::new();
    if !args.quiet {
        for l in &pulled.lazy {
            out.push_str(&format!(
                "Lazy layer {} ({}): {} of {} local\n",
                l.blob.short(),
                l.format.name(),
                crate::format::human_size(l.local),
                crate::format::human_size(l.data_len),
            ));
        }
        out.push_str(&format!("Digest: {}\n", pulled.digest));
        out.push_str(&format!(
            "Status: {} for {}\n",
            if pulled.up_to_date {
                "Image is up to date"
            } else {
                "Downloaded newer image"
            },
            reference.familiar()
        ));
    }
    out.push_str(&format!("{reference}\n"));
    super::print(out.as_bytes())
}
