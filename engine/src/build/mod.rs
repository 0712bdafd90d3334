//! `build`: a Dockerfile and its context to an image, as docker's classic builder does it:
//! every instruction is a step whose result is an image (untagged), the next step's parent.
//!
//! ```text
//!   parse (syntax) ─> stages (FROM … up to --target) ─> steps:
//!     metadata (ENV, CMD, LABEL, …) ─> strata-image's ConfigChanger, an empty_layer row
//!     COPY / ADD ─> copy (context or --from tree ─> plan ─> layer tar) ─> Authoring::add_layer
//!     RUN ─> run (a container through create + `start -a`, its upper ─> changes ─> layer)
//!   each step's image ─> Authoring::write_image; the cache: parent + instruction (+ the
//!   digest of what COPY copies, + the build args RUN sees) ─> that image
//! ```
//!
//! The cache reuses a step's image itself, so a second identical build gives the same ID.
//! It lives in `build-cache/` of the store: one file per key, naming the image's manifest; a
//! key whose image is gone is a miss. Expansion (`lex`) applies where docker applies it.
//! Progress goes to a [`BuildObserver`]; the library prints nothing.

pub mod context;
pub mod copy;
pub mod ignore;
pub mod lex;
pub mod parse;
pub mod run;
pub mod tree;

mod steps;

use std::collections::BTreeMap;

use strata_image::digest::Digest;
use strata_image::reference::Reference;
use strata_image::store::Store;

use crate::{Error, Result};

pub use context::Context;

/// What `build` is asked.
#[derive(Default)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// `-t`: names for the result.
    pub tags: Vec<String>,
    /// `--build-arg K=V` (or `K`: the value from this process's environment).
    pub build_args: Vec<String>,
    /// `--target`: the stage to stop at.
    pub target: Option<String>,
    pub no_cache: bool,
    /// `--label K=V`: labels for the result (a LABEL step at the end, as docker adds one).
    pub labels: Vec<String>,
    /// `--network` for RUN steps.
    pub network: Option<String>,
    /// `--add-host` for RUN steps.
    pub add_hosts: Vec<String>,
    /// RUN output goes nowhere (`-q`).
    pub quiet: bool,
}

/// What a build reports, in docker's classic builder's order.
pub trait BuildObserver {
    /// `Step N/M : INSTRUCTION`
    fn step(&self, n: usize, total: usize, instruction: &str);
    /// The step's image came from the cache.
    fn using_cache(&self);
    /// A RUN's container starts.
    fn running_in(&self, container: &str);
    /// A RUN's container is gone.
    fn removed(&self, container: &str);
    /// The step's image.
    fn step_done(&self, image: &Digest);
    /// A warning (build args nobody used).
    fn warning(&self, message: &str);
}

/// An observer that hears nothing.
pub struct Quiet;

impl BuildObserver for Quiet {
    fn step(&self, _: usize, _: usize, _: &str) {}
    fn using_cache(&self) {}
    fn running_in(&self, _: &str) {}
    fn removed(&self, _: &str) {}
    fn step_done(&self, _: &Digest) {}
    fn warning(&self, _: &str) {}
}

/// A finished build.
#[derive(Debug)]
pub struct Built {
    pub id: Digest,
    pub tags: Vec<Reference>,
}

/// Builds the Dockerfile in `opts` with `context`. Nothing is tagged unless every step
/// succeeded.
pub fn build(
    store: &Store,
    context: &Context,
    opts: &BuildOptions,
    observer: &dyn BuildObserver,
) -> Result<Built> {
    let tags = opts
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    let mut build_args = BTreeMap::new();
    for a in &opts.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), Some(v.to_string())),
            // `--build-arg K`: the value from the environment, unset when it is not there.
            None => build_args.insert(a.clone(), std::env::var(a).ok()),
        };
    }
    let mut file = parse::parse(&opts.dockerfile)?;
    if !opts.labels.is_empty() {
        // As docker's classic builder: the labels are one more LABEL at the end.
        let text = opts
            .labels
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                format!("{}={}", quote(k), quote(v))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let line = file.instructions.last().map_or(1, |i| i.line);
        file.instructions.push(parse::Instruction {
            line,
            keyword: "LABEL".into(),
            flags: Vec::new(),
            args: text.clone(),
            original: format!("LABEL {text}"),
        });
    }
    let id = steps::Builder::new(store, context, opts, observer, build_args).run(&file)?;
    if !tags.is_empty() {
        store.update(|t| {
            let entry = t
                .images
                .iter()
                .find(|e| e.digest() == &id.1)
                .map(|e| e.digest().clone())
                .ok_or_else(|| strata_image::Error::NoSuchImage(id.0.to_string()))?;
            for tag in &tags {
                t.set_tag(&entry, tag);
            }
            Ok::<_, Error>(())
        })?;
    }
    Ok(Built { id: id.0, tags })
}

/// `s` in double quotes, `"` and `\` escaped: a value as the config changer reads it back.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
