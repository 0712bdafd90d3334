//! `strata-bench`: the workloads DESIGN.md's bars are stated in, run in one go on the same
//! layer data for native ext4, kernel overlayfs, fuse-overlayfs and strata-fs, printed as a
//! markdown table of medians with strata-fs's ratios to kernel overlayfs and fuse-overlayfs.
//!
//! ```text
//!   strata-bench [--quick] [--only walk,readdir,seqread,randread,copyup,untar,pull,run,commit,build,push,runtime] [--runs N]
//! ```
//! Needs root (loop devices, kernel overlayfs, `drop_caches`), `fio`, `fuse-overlayfs`, and
//! `strata-fs` built beside it (`cargo build --release -p strata-fs -p strata-bench`) or
//! named by `$STRATA_FS_BIN`.
//!
//! The workloads, each the median of `--runs` (5) rounds on every target:
//! 1. **walk**: `lstat` of every entry of a 100k-file tree spread over 4 layers (with shadowed
//!    files, whiteouts and opaque directories), recursive readdir. *Cold* is a fresh mount
//!    after `sync; echo 3 > /proc/sys/vm/drop_caches`: nothing of the tree is in the page,
//!    dentry or inode caches, nor in the daemon's own tables — what a container's first
//!    `find /` or image scan costs. *Warm* is a second walk of the same mount: what a
//!    union adds when the kernel's caches could answer (FUSE entry/attr timeouts, its own
//!    lookups). After it, the FUSE daemon's `VmRSS` (workload 7).
//! 2. **readdir**: the names of one 30k-entry directory merged from 3 layers, cold and warm:
//!    merging and whiteout filtering, which FUSE unions do in userspace.
//! 3. **seqread**: a cold 1 GiB lower file read in 1 MiB `read(2)`s, MB/s (10^6 bytes).
//! 4. **randread**: `fio` 4k random reads by 4 `psync` jobs for 10 s on that file, cold, IOPS:
//!    the per-request cost of a FUSE round trip against a page-cache miss.
//! 5. **copyup**: `open(O_WRONLY|O_APPEND)` + a 1-byte write + close on a 512 MiB lower file
//!    (the whole file is copied up), and `chmod` of it on another fresh mount: a metadata-only
//!    change that should not cost the file's copy.
//! 6. **untar**: `tar -xf` of 20k small files into the mount (they land in the upper), then
//!    `rm -rf` of them: the create/unlink path, as image builds and package managers use it.
//! 8. **pull** (`pull.rs`): `strata pull` against `skopeo copy` + `umoci unpack` of a 4-layer
//!    image from a loopback registry, and a cold walk of the result; its own table.
//! 9. **run** (`run.rs`): `strata run --rm demo true` and `exec` against runc on a
//!    fuse-overlayfs root (mount included) and podman; medians of at least 10.
//! 10. **commit** (`commit.rs`): `strata commit` against `podman commit` of a container that
//!     wrote the untar workload's 20k files; its own table.
//! 11. **build** (`build.rs`): `strata build` of a 10-step Dockerfile, cold and cached,
//!     against `podman build`; its own table.
//! 12. **push** (`push.rs`): `strata push` against `skopeo copy` of the pull image from the
//!     store to fresh loopback registries, as stored and as zstd:chunked; its own table.
//! 13. **runtime** (`runtime.rs`): `strata-runtime` create+start+delete of a busybox bundle
//!     against runc and crun; its own table.
//!
//! The native column runs the same operations without a union: on the merged tree copied
//! flat (walk, readdir), on the bottom layer's file itself (seqread, randread), on a plain
//! copy of the file in place — no copy-up at all (copyup), in a plain directory (untar).
//! Each union mount uses its defaults: kernel overlayfs with plain
//! `lowerdir=…,upperdir=…,workdir=…` (so its module defaults for redirect_dir, index and
//! metacopy), fuse-overlayfs and strata-fs with no options beyond the directories.
//!
//! All data lives on an ext4 image on a loop device, created for the run and removed at its
//! end, so runs start from the same filesystem state. `--quick` shrinks every size to about
//! a tenth and runs once: a smoke test, not a measurement.

mod build;
mod commit;
mod data;
mod lazy;
mod machine;
mod memcg;
mod ops;
mod procfs;
mod pull;
mod push;
mod report;
mod run;
mod runtime;
mod scratch;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

use crate::data::{Layout, Sizes};
use crate::machine::Conditions;
use crate::report::Results;
use crate::scratch::Scratch;
use crate::workloads::Bench;

#[derive(Parser, Debug)]
#[command(
    about = "Workload benchmarks: native ext4, kernel overlayfs, fuse-overlayfs and strata-fs"
)]
struct Args {
    /// Smaller data (about a tenth) and one run: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Only these workloads (comma-separated, or repeat the flag).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Rounds per workload and target; the median is reported [default: 5, 1 with --quick].
    #[arg(long)]
    runs: Option<usize>,
    /// Directory for the ext4 image (a sparse file of up to 12 GiB, removed at the end).
    #[arg(long, default_value = "/var/tmp")]
    image_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Metadata walk of the 100k-file tree, cold and warm, and the FUSE daemons' RSS.
    Walk,
    /// Merged readdir of the 30k-entry directory, cold and warm.
    Readdir,
    /// Sequential read of the 1 GiB lower file, cold.
    Seqread,
    /// fio 4k random reads, 4 jobs, cold.
    Randread,
    /// Copy-up of the 512 MiB lower file by an append, chmod of it, and chmod -R of 2,000
    /// small lower files.
    Copyup,
    /// tar -xf of 20k small files into the upper, and rm -rf of them.
    Untar,
    /// strata pull vs skopeo copy + umoci unpack of a 200 MiB image; cold walk of it.
    Pull,
    /// strata run --rm / exec vs runc on fuse-overlayfs and podman.
    Run,
    /// strata commit vs podman commit of a container that wrote 20k small files.
    Commit,
    /// strata build of a 10-step Dockerfile, cold and cached, vs podman build.
    Build,
    /// strata push vs skopeo copy of the pull image to a loopback registry.
    Push,
    /// strata-runtime vs runc and crun: create+start+delete of a busybox bundle.
    Runtime,
    /// Lazy pull + run to first output vs a full pull, eStargz through a 10 MB/s proxy.
    Lazy,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("strata-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the selected workloads and prints the report; `false` when a measurement failed.
fn run(args: &Args) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("strata-bench needs root: loop devices, kernel overlayfs and drop_caches");
    }
    for tool in ["fio", "fuse-overlayfs", "tar", "mkfs.ext4", "losetup", "cp"] {
        machine::which(tool)?;
    }
    let strata_fs = strata_tests::mounts::strata_fs_bin()?;
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 }).max(1);
    let wanted = |w: Workload| args.only.is_empty() || args.only.contains(&w);

    let started = Instant::now();
    let before = Conditions::now();
    before.warn();
    let scratch = Scratch::create(&args.image_dir, sizes.image_bytes)?;
    let layout = Layout::new(scratch.root());
    eprintln!(
        "strata-bench: generating data in {}",
        scratch.root().display()
    );
    let walk_expected = generate(&scratch, &layout, &sizes, &wanted)?;
    eprintln!(
        "strata-bench: data ready after {:.0} s; {runs} run(s) per workload and target",
        started.elapsed().as_secs_f64()
    );

    let mut bench = Bench {
        scratch: &scratch,
        layout: &layout,
        sizes: &sizes,
        runs,
        results: Results::default(),
        walk_expected,
    };
    if wanted(Workload::Walk) {
        bench.walk();
    }
    if wanted(Workload::Readdir) {
        bench.readdir();
    }
    if wanted(Workload::Seqread) {
        bench.seq_read();
    }
    if wanted(Workload::Randread) {
        bench.rand_read();
    }
    if wanted(Workload::Copyup) {
        bench.copy_up();
    }
    if wanted(Workload::Untar) {
        bench.untar();
    }
    let results = bench.results;
    let pull = match wanted(Workload::Pull) {
        true => Some(pull::run_pull(
            &scratch.root().join("pull"),
            &strata_fs,
            runs,
            args.quick,
        )),
        false => None,
    };
    let lazy_section = wanted(Workload::Lazy)
        .then(|| lazy::run_lazy(&scratch.root().join("lazy"), runs, args.quick));
    let push = wanted(Workload::Push)
        .then(|| push::run_push(&scratch.root().join("push"), runs, args.quick));
    let run_section = match wanted(Workload::Run) {
        true => Some(run::run_run(&scratch.root().join("run"), runs)),
        false => None,
    };
    let commit_section = match wanted(Workload::Commit) {
        true => Some(commit::run_commit(
            &scratch.root().join("commit"),
            sizes.untar_files,
            runs,
        )),
        false => None,
    };
    let runtime_section = wanted(Workload::Runtime)
        .then(|| runtime::run_runtime(&scratch.root().join("runtime"), runs));
    let build_section = match wanted(Workload::Build) {
        true => Some(build::run_build(&scratch.root().join("build"), runs)),
        false => None,
    };
    drop(scratch);
    let after = Conditions::now();

    print!(
        "{}",
        machine::environment(&strata_fs, runs, args.quick, &before, &after)
    );
    println!();
    let union_workloads = [
        Workload::Walk,
        Workload::Readdir,
        Workload::Seqread,
        Workload::Randread,
        Workload::Copyup,
        Workload::Untar,
    ];
    if union_workloads.iter().any(|w| wanted(*w)) {
        print!("{}", results.table(&sizes));
    }
    let mut errors: Vec<String> = results.errors().collect();
    match pull {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("pull: {e:#}")),
        None => {}
    }
    match lazy_section {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("lazy: {e:#}")),
        None => {}
    }
    match push {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("push: {e:#}")),
        None => {}
    }
    match run_section {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("run: {e:#}")),
        None => {}
    }
    match runtime_section {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("runtime: {e:#}")),
        None => {}
    }
    match commit_section {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("commit: {e:#}")),
        None => {}
    }
    match build_section {
        Some(Ok(table)) => print!("\n{table}"),
        Some(Err(e)) => errors.push(format!("build: {e:#}")),
        None => {}
    }
    if !errors.is_empty() {
        println!("\nFailures:\n");
        for e in &errors {
            println!("- {e}");
        }
    }
    println!("\n<details><summary>Every run</summary>\n");
    print!("{}", results.runs_table(&sizes));
    println!("\n</details>");
    eprintln!(
        "strata-bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(errors.is_empty())
}

/// Writes the layers, archive and native copies the selected workloads use; returns what
/// the walk must count.
fn generate(
    scratch: &Scratch,
    layout: &Layout,
    sizes: &Sizes,
    wanted: &dyn Fn(Workload) -> bool,
) -> Result<ops::Counts> {
    let mut expected = ops::Counts::default();
    let mut native = Vec::new();
    layout.create()?;
    if wanted(Workload::Walk) {
        let (layers, counts) = data::walk_layers(sizes);
        data::write_layers(layout, &layers)?;
        expected = counts;
        native.push(data::WALK_DIR);
    }
    if wanted(Workload::Readdir) {
        let (layers, _) = data::readdir_layers(sizes);
        data::write_layers(layout, &layers)?;
        native.push(data::READDIR_DIR);
    }
    if wanted(Workload::Seqread) || wanted(Workload::Randread) {
        data::write_big_file(&layout.bottom().join(data::SEQ_FILE), sizes.seq_bytes, 1)?;
    }
    if wanted(Workload::Copyup) {
        let file = layout.bottom().join(data::COPYUP_FILE);
        data::write_big_file(&file, sizes.copyup_bytes, 2)?;
        native.push(data::COPYUP_FILE);
        data::write_small_files(&layout.bottom().join(data::CHMODR_DIR), sizes.chmodr_files)?;
        native.push(data::CHMODR_DIR);
    }
    if wanted(Workload::Untar) {
        data::write_tar(&layout.tar, sizes.untar_files)?;
    }
    data::copy_merged(scratch, layout, &native)?;
    scratch::drop_caches()?;
    Ok(expected)
}
