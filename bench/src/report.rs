//! What is measured (`Metric`), on what (`Target`), the samples, and the markdown table:
//! medians, ratios of strata-fs to its peers, and the bar DESIGN.md sets for each row.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use strata_tests::mounts::Driver;

use crate::data::Sizes;

/// Where a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The same data on the ext4 image directly: the merged tree copied flat for the tree
    /// workloads, the lower file itself (or a plain copy, when it is written) otherwise.
    Native,
    Kernel,
    FuseOverlayfs,
    /// strata-fs as it serves by default: fuser's loop over `/dev/fuse`.
    Strata,
    /// strata-fs on its own loop (`server=strata`) over FUSE io_uring queues.
    StrataUring,
    /// strata-fs on its own loop over `/dev/fuse`.
    StrataDev,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Native,
        Target::Kernel,
        Target::FuseOverlayfs,
        Target::Strata,
    ];

    /// [`Target::ALL`] and strata's own loop on each transport: for the workloads of many
    /// small requests (untar, rm -rf, walk, readdir), where the transport shows.
    pub const WITH_OWN_LOOP: [Target; 6] = [
        Target::Native,
        Target::Kernel,
        Target::FuseOverlayfs,
        Target::Strata,
        Target::StrataUring,
        Target::StrataDev,
    ];

    /// The strata-fs mount options that pick the loop and transport.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            Target::StrataUring => &["server=strata", "transport=uring"],
            Target::StrataDev => &["server=strata", "transport=dev"],
            _ => &[],
        }
    }

    pub fn driver(self) -> Option<Driver> {
        match self {
            Target::Native => None,
            Target::Kernel => Some(Driver::Kernel),
            Target::FuseOverlayfs => Some(Driver::FuseOverlayfs),
            Target::Strata | Target::StrataUring | Target::StrataDev => Some(Driver::Strata),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Native => "native ext4",
            Target::Kernel => "kernel overlayfs",
            Target::FuseOverlayfs => "fuse-overlayfs",
            Target::Strata => "strata-fs",
            Target::StrataUring => "strata-fs own loop, io_uring",
            Target::StrataDev => "strata-fs own loop, /dev/fuse",
        }
    }

    /// How the FUSE targets' requests travel (a `transport=uring` mount fails rather than
    /// fall back, so its figures are io_uring's).
    pub fn transport(self) -> Option<&'static str> {
        match self {
            Target::FuseOverlayfs => Some("/dev/fuse read loop"),
            Target::Strata => Some("fuser, /dev/fuse read loop"),
            Target::StrataUring => Some("per-CPU queues"),
            Target::StrataDev => Some("read loop"),
            Target::Native | Target::Kernel => None,
        }
    }
}

/// How a figure is read and printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    /// Decimal megabytes (10^6 bytes) per second.
    MegabytesPerSecond,
    Iops,
    Bytes,
    /// FUSE requests per file.
    PerFile,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Seconds if value >= 1.0 => format!("{value:.2} s"),
            Unit::Seconds if value >= 1e-3 => format!("{:.1} ms", value * 1e3),
            Unit::Seconds => format!("{:.0} µs", value * 1e6),
            Unit::MegabytesPerSecond => format!("{value:.0} MB/s"),
            Unit::Iops => format!("{value:.0} IOPS"),
            Unit::Bytes => format!("{:.1} MiB", value / (1024.0 * 1024.0)),
            // Listings answer dozens of entries per request: hundredths show.
            Unit::PerFile if value < 1.0 => format!("{value:.3} req/file"),
            Unit::PerFile => format!("{value:.1} req/file"),
        }
    }
}

/// A bar from DESIGN.md, as a test on the medians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bar {
    /// strata / kernel ≤ x (times).
    KernelAtMost(f64),
    /// strata / kernel ≥ x (rates).
    KernelAtLeast(f64),
    /// strata / fuse-overlayfs ≤ x.
    FuseAtMost(f64),
    /// strata's figure ≤ x seconds.
    SecondsAtMost(f64),
}

impl Bar {
    fn describe(self) -> String {
        match self {
            Bar::KernelAtMost(x) => format!("≤ {x}× kernel"),
            Bar::KernelAtLeast(x) => format!("≥ {x}× kernel"),
            Bar::FuseAtMost(1.0) => "≤ fuse-overlayfs".to_string(),
            Bar::FuseAtMost(x) => format!("≤ {x}× fuse-overlayfs"),
            Bar::SecondsAtMost(x) => format!("≤ {}", Unit::Seconds.format(x)),
        }
    }

    /// Whether the medians meet the bar; `None` when a figure is missing.
    fn met(self, strata: Option<f64>, kernel: Option<f64>, fuse: Option<f64>) -> Option<bool> {
        let strata = strata?;
        Some(match self {
            Bar::KernelAtMost(x) => strata / kernel? <= x,
            Bar::KernelAtLeast(x) => strata / kernel? >= x,
            Bar::FuseAtMost(x) => strata / fuse? <= x,
            Bar::SecondsAtMost(x) => strata <= x,
        })
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    WalkCold,
    WalkWarm,
    DaemonRss,
    ReaddirCold,
    ReaddirWarm,
    SeqRead,
    RandRead,
    RandReadDevice,
    CopyUp,
    Chmod,
    ChmodR,
    Untar,
    RmRf,
    /// FUSE requests per file over a mount's life (strata-fs's own loop counts them).
    WalkRequests,
    ReaddirRequests,
    UntarRequests,
}

impl Metric {
    pub fn unit(self) -> Unit {
        match self {
            Metric::SeqRead => Unit::MegabytesPerSecond,
            Metric::RandRead => Unit::Iops,
            Metric::DaemonRss | Metric::RandReadDevice => Unit::Bytes,
            Metric::WalkRequests | Metric::ReaddirRequests | Metric::UntarRequests => Unit::PerFile,
            _ => Unit::Seconds,
        }
    }

    pub fn label(self, sizes: &Sizes) -> String {
        let files = count(sizes.walk_files());
        let entries = count(sizes.readdir_entries);
        let small = count(sizes.untar_files);
        match self {
            Metric::WalkCold => format!("metadata walk, {files} files / 4 layers, cold"),
            Metric::WalkWarm => format!("metadata walk, {files} files / 4 layers, warm"),
            Metric::DaemonRss => format!("FUSE daemon RSS after the warm {files} walk"),
            Metric::ReaddirCold => format!("readdir of {entries} entries / 3 layers, cold"),
            Metric::ReaddirWarm => format!("readdir of {entries} entries / 3 layers, warm"),
            Metric::SeqRead => {
                format!("sequential read, {} lower file, cold", mib(sizes.seq_bytes))
            }
            Metric::RandRead => format!(
                "4k random reads, 4 threads, {} lower file, cold, {} of memory (fio)",
                mib(sizes.seq_bytes),
                mib(sizes.seq_bytes / 4)
            ),
            Metric::RandReadDevice => "bytes those random reads took from the disk".to_string(),
            Metric::CopyUp => format!(
                "copy-up: append 1 byte to a {} lower file",
                mib(sizes.copyup_bytes)
            ),
            Metric::Chmod => format!("chmod of a {} lower file", mib(sizes.copyup_bytes)),
            Metric::ChmodR => format!(
                "chmod -R of {} small lower files (metadata-only copy-ups)",
                count(sizes.chmodr_files)
            ),
            Metric::Untar => format!("untar {small} small files into the upper"),
            Metric::RmRf => format!("rm -rf of those {small} files"),
            Metric::WalkRequests => {
                format!("FUSE requests per file: the cold and the warm walk of {files}")
            }
            Metric::ReaddirRequests => {
                format!("FUSE requests per entry: the cold and the warm readdir of {entries}")
            }
            Metric::UntarRequests => {
                format!("FUSE requests per file: untar of {small}, a check walk, rm -rf")
            }
        }
    }

    pub fn bar(self) -> Option<Bar> {
        Some(match self {
            Metric::WalkCold => Bar::KernelAtMost(1.5),
            Metric::WalkWarm => Bar::KernelAtMost(1.2),
            Metric::DaemonRss => Bar::FuseAtMost(1.0),
            Metric::ReaddirCold => Bar::KernelAtMost(2.0),
            Metric::ReaddirWarm => Bar::FuseAtMost(1.0),
            Metric::SeqRead => Bar::KernelAtLeast(0.9),
            Metric::RandRead => Bar::KernelAtLeast(0.8),
            Metric::CopyUp => Bar::FuseAtMost(1.0),
            // "Milliseconds, not the whole file's copy time".
            Metric::Chmod => Bar::SecondsAtMost(0.1),
            Metric::ChmodR => Bar::FuseAtMost(1.0),
            // What the row above measured, not a speed.
            Metric::RandReadDevice
            | Metric::WalkRequests
            | Metric::ReaddirRequests
            | Metric::UntarRequests => return None,
            Metric::Untar | Metric::RmRf => Bar::KernelAtMost(2.0),
        })
    }
}

/// 100000 → "100k", 30000 → "30k", 2500 → "2500".
fn count(n: usize) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// 1073741824 → "1 GiB", 536870912 → "512 MiB".
fn mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= 1024 * MIB && bytes % (1024 * MIB) == 0 {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// The median; the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Every sample, and every failure, of one benchmark run.
#[derive(Debug, Default)]
pub struct Results {
    samples: BTreeMap<(Metric, Target), Vec<f64>>,
    errors: BTreeMap<(Metric, Target), String>,
}

impl Results {
    pub fn add(&mut self, metric: Metric, target: Target, value: f64) {
        self.samples
            .entry((metric, target))
            .or_default()
            .push(value);
    }

    pub fn fail(&mut self, metric: Metric, target: Target, error: String) {
        self.errors.entry((metric, target)).or_insert(error);
    }

    pub fn median(&self, metric: Metric, target: Target) -> Option<f64> {
        median(self.samples.get(&(metric, target))?)
    }

    /// The failures, as `metric on target: error` lines.
    pub fn errors(&self) -> impl Iterator<Item = String> + '_ {
        self.errors
            .iter()
            .map(|((m, t), e)| format!("{m:?} on {}: {e}", t.name()))
    }

    fn metrics(&self) -> Vec<Metric> {
        let mut metrics: Vec<Metric> = self
            .samples
            .keys()
            .chain(self.errors.keys())
            .map(|(m, _)| *m)
            .collect();
        metrics.dedup();
        metrics.sort();
        metrics.dedup();
        metrics
    }

    fn cell(&self, metric: Metric, target: Target) -> String {
        match self.median(metric, target) {
            Some(v) => metric.unit().format(v),
            None if self.errors.contains_key(&(metric, target)) => "error".to_string(),
            None => "—".to_string(),
        }
    }

    fn ratio(&self, metric: Metric, peer: Target) -> String {
        self.ratio_of(metric, Target::Strata, peer)
    }

    fn ratio_of(&self, metric: Metric, of: Target, peer: Target) -> String {
        match (self.median(metric, of), self.median(metric, peer)) {
            (Some(s), Some(p)) if p > 0.0 => format!("{:.2}×", s / p),
            _ => "—".to_string(),
        }
    }

    /// The results table: medians, ratios (strata-fs's figure over the peer's) and bars.
    pub fn table(&self, sizes: &Sizes) -> String {
        let mut out = String::new();
        out.push_str("| workload |");
        for t in Target::WITH_OWN_LOOP {
            match t.transport() {
                Some(transport) => {
                    let _ = write!(out, " {} ({transport}) |", t.name());
                }
                None => {
                    let _ = write!(out, " {} |", t.name());
                }
            }
        }
        out.push_str(" strata / kernel | strata / fuse-overlayfs | own loop io_uring / kernel | own loop /dev/fuse / kernel | bar (DESIGN.md) |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for metric in self.metrics() {
            let _ = write!(out, "| {} |", metric.label(sizes));
            for t in Target::WITH_OWN_LOOP {
                let _ = write!(out, " {} |", self.cell(metric, t));
            }
            let verdict = match metric.bar() {
                None => String::new(),
                Some(bar) => {
                    let met = bar.met(
                        self.median(metric, Target::Strata),
                        self.median(metric, Target::Kernel),
                        self.median(metric, Target::FuseOverlayfs),
                    );
                    let word = match met {
                        Some(true) => "met",
                        Some(false) => "**missed**",
                        None => "—",
                    };
                    format!("{}: {word}", bar.describe())
                }
            };
            let _ = writeln!(
                out,
                " {} | {} | {} | {} | {verdict} |",
                self.ratio(metric, Target::Kernel),
                self.ratio(metric, Target::FuseOverlayfs),
                self.ratio_of(metric, Target::StrataUring, Target::Kernel),
                self.ratio_of(metric, Target::StrataDev, Target::Kernel)
            );
        }
        out
    }

    /// Every run's figure, for the spread behind each median.
    pub fn runs_table(&self, sizes: &Sizes) -> String {
        let mut out = String::from("| workload | target | runs |\n|---|---|---|\n");
        for ((metric, target), values) in &self.samples {
            let unit = metric.unit();
            let runs: Vec<String> = values.iter().map(|v| unit.format(*v)).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                metric.label(sizes),
                target.name(),
                runs.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn figures_are_printed_in_a_readable_unit() {
        assert_eq!(Unit::Seconds.format(12.345), "12.35 s");
        assert_eq!(Unit::Seconds.format(0.0123), "12.3 ms");
        assert_eq!(Unit::Seconds.format(0.000_042), "42 µs");
        assert_eq!(Unit::Bytes.format(40.0 * 1024.0 * 1024.0), "40.0 MiB");
        assert_eq!(count(100_000), "100k");
        assert_eq!(count(2500), "2500");
        assert_eq!(mib(1 << 30), "1 GiB");
        assert_eq!(mib(512 << 20), "512 MiB");
    }

    #[test]
    fn bars_compare_medians_in_the_right_direction() {
        // Times: lower is better.
        assert_eq!(
            Bar::KernelAtMost(1.5).met(Some(1.4), Some(1.0), None),
            Some(true)
        );
        assert_eq!(
            Bar::KernelAtMost(1.5).met(Some(1.6), Some(1.0), None),
            Some(false)
        );
        // Rates: higher is better.
        assert_eq!(
            Bar::KernelAtLeast(0.9).met(Some(95.0), Some(100.0), None),
            Some(true)
        );
        assert_eq!(Bar::FuseAtMost(1.0).met(Some(1.0), None, None), None);
    }

    #[test]
    fn the_table_has_a_row_per_metric_with_ratios() {
        let mut results = Results::default();
        for (t, v) in [
            (Target::Native, 1.0),
            (Target::Kernel, 2.0),
            (Target::FuseOverlayfs, 8.0),
            (Target::Strata, 3.0),
            (Target::StrataUring, 2.5),
        ] {
            results.add(Metric::WalkCold, t, v);
        }
        results.fail(Metric::Untar, Target::Strata, "EIO".to_string());
        let table = results.table(&Sizes::full());
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(
            rows[2].contains("| 1.50× | 0.38× | 1.25× | — | ≤ 1.5× kernel: met |"),
            "{table}"
        );
        assert!(rows[3].contains("| error |"), "{table}");
    }
}
