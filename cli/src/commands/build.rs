//! `build`: strata-engine's builder; this reads the Dockerfile and the context (a
//! directory, or `-`: a tar or a Dockerfile on stdin) and prints docker's classic builder
//! lines.
//!
//! Exit status as docker's: 0, 1 when the build fails (the error on stderr).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use strata_engine::build::{self, BuildObserver, BuildOptions, Context};
use strata_image::digest::Digest;

use crate::store::Store;
use crate::Global;

#[derive(Args)]
pub struct BuildArgs {
    /// Name and optionally a tag in the 'name:tag' format
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (default: PATH/Dockerfile)
    #[arg(short, long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_arg: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Set metadata for an image
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Set the networking mode for the RUN instructions during build (none, host)
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// The build context: a directory, or - (a tar or a Dockerfile on stdin)
    #[arg(value_name = "PATH|-")]
    pub context: String,
}

/// docker's classic builder lines on stdout.
struct Lines;

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

fn out(s: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(s);
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

impl BuildObserver for Lines {
    fn step(&self, n: usize, total: usize, instruction: &str) {
        out(format_args!("Step {n}/{total} : {instruction}"));
    }
    fn using_cache(&self) {
        out(format_args!(" ---> Using cache"));
    }
    fn running_in(&self, container: &str) {
        out(format_args!(" ---> Running in {container}"));
    }
    fn removed(&self, container: &str) {
        out(format_args!("Removing intermediate container {container}"));
    }
    fn step_done(&self, image: &Digest) {
        out(format_args!(" ---> {}", short(image)));
    }
    fn warning(&self, message: &str) {
        out(format_args!("{message}"));
    }
}

/// The Dockerfile's text and the context.
fn inputs(store: &Store, args: &BuildArgs) -> Result<(String, Context)> {
    store.init()?;
    let read_file = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .with_context(|| format!("reading the Dockerfile {}", p.display()))
    };
    if args.context == "-" {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("reading the build context from stdin")?;
        let is_tar = input.len() >= 262 && &input[257..262] == b"ustar"
            || input.starts_with(&[0x1f, 0x8b])
            || input.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        if !is_tar {
            // A Dockerfile alone: an empty context.
            let text = String::from_utf8(input).context("the Dockerfile on stdin is not UTF-8")?;
            return Ok((text, Context::empty(&store.tmp_dir())?));
        }
        let ctx = Context::from_tar(&mut &input[..], &store.tmp_dir())?;
        let name = args.file.clone().unwrap_or_else(|| "Dockerfile".into());
        let text = read_file(&ctx.dir.join(name))?;
        return Ok((text, ctx));
    }
    let dir = PathBuf::from(&args.context);
    let ctx = Context::open(&dir)?;
    let text = match &args.file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from stdin")?;
            s
        }
        Some(f) => read_file(f)?,
        None => read_file(&dir.join("Dockerfile"))?,
    };
    Ok((text, ctx))
}

/// `build`: docker's exit status (a failing RUN's own status, as docker's client returns
/// it; 1 for other failures).
pub fn build(global: &Global, args: BuildArgs) -> i32 {
    let store = Store::new(&global.root);
    let (dockerfile, ctx) = match inputs(&store, &args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return 1;
        }
    };
    match run(&store, &args, dockerfile, &ctx) {
        Ok(()) => 0,
        Err(e @ strata_engine::Error::RunFailed { code, .. }) => {
            eprintln!("{e}");
            code
        }
        Err(e) => {
            eprintln!("Error response from daemon: {}", e.chain());
            1
        }
    }
}

fn run(
    store: &Store,
    args: &BuildArgs,
    dockerfile: String,
    ctx: &Context,
) -> std::result::Result<(), strata_engine::Error> {
    let opts = BuildOptions {
        dockerfile,
        tags: args.tag.clone(),
        build_args: args.build_arg.clone(),
        target: args.target.clone(),
        no_cache: args.no_cache,
        labels: args.label.clone(),
        network: args.network.clone(),
        add_hosts: args.add_host.clone(),
        quiet: args.quiet,
    };
    let observer: &dyn BuildObserver = match args.quiet {
        true => &build::Quiet,
        false => &Lines,
    };
    let built = build::build(store, ctx, &opts, observer)?;
    if args.quiet {
        out(format_args!("{}", built.id));
        return Ok(());
    }
    out(format_args!("Successfully built {}", short(&built.id)));
    for t in &built.tags {
        out(format_args!("Successfully tagged {}", t.familiar()));
    }
    Ok(())
}
