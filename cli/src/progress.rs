//! Pull progress on stderr: a bar per layer on a terminal (indicatif), docker's plain
//! `ID: Status` lines otherwise, nothing with `-q`. strata-image's pull and push report
//! through [`PullObserver`] and [`PushObserver`]; this is the binary's implementation.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_image::pull::{LayerObserver, PullObserver};
use strata_image::push::PushObserver;

pub enum Progress {
    Quiet,
    /// Plain lines; the mutex keeps lines from different threads whole.
    Lines(Mutex<()>),
    Bars(MultiProgress),
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Progress::Lines(Mutex::new(()))
        }
    }

    /// A message line (`latest: Pulling from library/busybox`).
    pub fn line(&self, msg: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Lines(m) => {
                let _g = m.lock();
                let _ = writeln!(std::io::stderr(), "{msg}");
            }
            Progress::Bars(mp) => {
                let _ = mp.println(msg);
            }
        }
    }

    /// A bar (or line prefix) for one layer of `size` bytes, shown as `id`.
    fn layer_progress(&self, id: &str, size: u64) -> LayerProgress<'_> {
        let bar = match self {
            Progress::Bars(mp) => {
                let bar = mp.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg:<18} [{bar:30}] {decimal_bytes:>9}/{decimal_total_bytes:<9}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(id.to_string());
                bar.set_message("Waiting");
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        LayerProgress {
            progress: self,
            id: id.to_string(),
            bar,
        }
    }
}

pub struct LayerProgress<'a> {
    progress: &'a Progress,
    id: String,
    bar: Option<ProgressBar>,
}

impl PullObserver for Progress {
    fn layer(&self, id: &str, size: u64) -> Box<dyn LayerObserver + '_> {
        Box::new(self.layer_progress(id, size))
    }
}

impl PushObserver for Progress {
    fn layer(&self, id: &str, size: u64) -> Box<dyn LayerObserver + '_> {
        Box::new(self.layer_progress(id, size))
    }
}

impl LayerObserver for LayerProgress<'_> {
    fn status(&self, status: &str) {
        match &self.bar {
            Some(b) => b.set_message(status.to_string()),
            None => self.progress.line(&format!("{}: {status}", self.id)),
        }
    }

    /// A status shown on the bar only (docker's plain output does not print it).
    fn transfer(&self, status: &str) {
        if let Some(b) = &self.bar {
            b.set_message(status.to_string());
        }
    }

    fn bytes(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// The final state; the bar stays on screen with the status.
    fn finish(&self, status: &str) {
        match &self.bar {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}").expect("valid template"),
                );
                b.finish_with_message(status.to_string());
            }
            None => self.progress.line(&format!("{}: {status}", self.id)),
        }
    }

    fn fail(&self, error: &strata_image::Error) {
        if let Some(b) = &self.bar {
            b.abandon_with_message(format!("failed: {}", error.chain()));
        }
    }
}
