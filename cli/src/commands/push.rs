//! `strata push` and `strata search`: flags and output as docker's; the work is in
//! strata-image's `push` and `search`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::format::{ellipsis, Format};
use crate::oci::Compression;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::auth::AuthFile;
use crate::store::Store;
use crate::Global;
use strata_image::lazy::Format as LazyFormat;
use strata_image::push::{push as push_image, ManifestFormat, PushOptions};
use strata_image::search::{search as search_registry, SearchResult};

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Oci,
    V2s2,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    /// gzip, seekable: pulled lazily (a new diff-id per layer: the TOC is part of the tar)
    Estargz,
    /// zstd, seekable: pulled lazily by strata and containers/storage (same diff-ids)
    #[value(name = "zstd:chunked")]
    ZstdChunked,
}

#[derive(Args)]
pub struct PushArgs {
    /// Image to push: NAME or NAME:TAG
    pub reference: String,
    /// Print only the pushed reference
    #[arg(short, long)]
    pub quiet: bool,
    /// Manifest format in the registry (default: the image's own)
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Compress layers so (default: as they are stored)
    #[arg(long, value_enum)]
    pub compression_format: Option<CompressionArg>,
    /// Allow plain HTTP to this registry
    #[arg(long)]
    pub insecure: bool,
}

pub fn push(global: &Global, args: PushArgs) -> Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let store = Store::new(&global.root);
    let progress = Progress::new(args.quiet);
    let given = Reference::parse_name_only(&args.reference)?;
    if given.tag.is_none() && given.digest.is_none() {
        progress.line("Using default tag: latest");
    }
    progress.line(&format!(
        "The push refers to repository [{}]",
        reference.name()
    ));
    let pushed = push_image(
        &store,
        &AuthFile::new(&global.root),
        &reference,
        &PushOptions {
            format: args.format.map(|f| match f {
                FormatArg::Oci => ManifestFormat::Oci,
                FormatArg::V2s2 => ManifestFormat::V2s2,
            }),
            compression: args.compression_format.and_then(|c| match c {
                CompressionArg::Gzip => Some(Compression::Gzip),
                CompressionArg::Zstd => Some(Compression::Zstd),
                CompressionArg::Estargz | CompressionArg::ZstdChunked => None,
            }),
            seekable: args.compression_format.and_then(|c| match c {
                CompressionArg::Estargz => Some(LazyFormat::Estargz),
                CompressionArg::ZstdChunked => Some(LazyFormat::ZstdChunked),
                CompressionArg::Gzip | CompressionArg::Zstd => None,
            }),
            insecure: args.insecure,
        },
        &progress,
    )?;
    let out = if args.quiet {
        format!("{reference}\n")
    } else {
        format!(
            "{}: digest: {} size: {}\n",
            pushed.tag, pushed.digest, pushed.size
        )
    };
    super::print(out.as_bytes())
}

#[derive(Args)]
pub struct SearchArgs {
    /// TERM (Docker Hub's search) or REGISTRY/TERM (that registry's catalog)
    pub term: String,
    /// Max number of search results
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (stars=N, is-official=BOOL,
    /// is-automated=BOOL)
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format: table, json, or a Go template ({{.Name}} {{.Description}} {{.StarCount}}
    /// {{.IsOfficial}} {{.IsAutomated}})
    #[arg(long)]
    pub format: Option<String>,
    /// Allow plain HTTP to this registry
    #[arg(long)]
    pub insecure: bool,
}

const SEARCH_TABLE: &str = "{{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}";

/// docker's search filters.
#[derive(Default)]
struct Filters {
    stars: u64,
    official: Option<bool>,
    automated: Option<bool>,
}

impl Filters {
    fn parse(args: &[String]) -> Result<Filters> {
        let mut f = Filters::default();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter (expected name=value)");
            };
            let flag = |v: &str| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => bail!("invalid filter '{k}={v}'"),
            };
            match k {
                "stars" => {
                    f.stars = v
                        .parse()
                        .map_err(|_| anyhow::anyhow!("invalid filter 'stars={v}'"))?
                }
                "is-official" => f.official = Some(flag(v)?),
                "is-automated" => f.automated = Some(flag(v)?),
                _ => bail!("invalid filter '{k}'"),
            }
        }
        Ok(f)
    }

    fn keep(&self, r: &SearchResult) -> bool {
        r.star_count >= self.stars
            && self.official.is_none_or(|o| o == r.is_official)
            && self.automated.is_none_or(|a| a == r.is_automated)
    }
}

/// A result as the template sees it (docker's searchContext).
fn row(r: &SearchResult, trunc: bool) -> Value {
    let desc = r.description.replace(['\n', '\r'], " ");
    let desc = if trunc { ellipsis(&desc, 45) } else { desc };
    let ok = |b: bool| if b { "[OK]" } else { "" };
    json!({
        "Name": r.name,
        "Description": desc,
        "StarCount": r.star_count.to_string(),
        "IsOfficial": ok(r.is_official),
        "IsAutomated": ok(r.is_automated),
    })
}

pub fn search(global: &Global, args: SearchArgs) -> Result<()> {
    if !(1..=100).contains(&args.limit) {
        bail!("limit {} is outside the range of [1, 100]", args.limit);
    }
    let filters = Filters::parse(&args.filter)?;
    let format = Format::parse(args.format.as_deref(), SEARCH_TABLE)?;
    let results = search_registry(
        &AuthFile::new(&global.root),
        &args.term,
        args.limit,
        args.insecure,
    )?;
    let rows: Vec<Value> = results
        .iter()
        .filter(|r| filters.keep(r))
        .map(|r| row(r, !args.no_trunc))
        .collect();
    let headers = json!({
        "Name": "NAME",
        "Description": "DESCRIPTION",
        "StarCount": "STARS",
        "IsOfficial": "OFFICIAL",
        "IsAutomated": "AUTOMATED",
    });
    let mut out = Vec::new();
    format.print(&mut out, &headers, &rows)?;
    super::print(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_filters_as_docker() {
        let r = SearchResult {
            name: "busybox".into(),
            description: "a\nvery long description that goes on and on past the cut".into(),
            star_count: 12,
            is_official: true,
            is_automated: false,
        };
        let v = row(&r, true);
        assert_eq!(v["Description"].as_str().unwrap().chars().count(), 45);
        assert!(v["Description"].as_str().unwrap().starts_with("a very"));
        assert_eq!(v["IsOfficial"], "[OK]");
        assert_eq!(v["IsAutomated"], "");
        assert_eq!(v["StarCount"], "12");
        assert!(row(&r, false)["Description"]
            .as_str()
            .unwrap()
            .ends_with("cut"));
        let f = Filters::parse(&["stars=10".into(), "is-official=true".into()]).unwrap();
        assert!(f.keep(&r));
        let f = Filters::parse(&["stars=13".into()]).unwrap();
        assert!(!f.keep(&r));
        assert!(Filters::parse(&["nope=1".into()]).is_err());
        assert!(Filters::parse(&["stars".into()]).is_err());
    }
}
