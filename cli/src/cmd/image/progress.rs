//! Rendering a pull's progress events: per-layer bars and an overall bar (bytes and rate) on a
//! TTY, docker's plain lines otherwise ("abc123: Pulling fs layer", "Download complete",
//! "Pull complete", "Already exists").

use crate::output::short_id;
use berth_proto::registry::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;

/// Where and how to draw.
pub enum Renderer {
    /// Nothing (`-q`).
    Quiet,
    /// Docker's plain lines, one per state change.
    Plain { out: Box<dyn Write + Send>, last: HashMap<String, i32> },
    /// indicatif bars.
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        total: Option<ProgressBar>,
        sizes: HashMap<String, u64>,
        done: HashMap<String, u64>,
        /// Whether the bars are on stderr.
        to_stderr: bool,
    },
}

fn layer_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg:<18} [{bar:30}] {bytes:>9}/{total_bytes:<9}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn total_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "Total {msg:<14} [{bar:30}] {bytes:>9}/{total_bytes:<9} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Renderer {
    /// Bars when `tty`, plain lines otherwise; `to_stderr` for `ensure_image` (run).
    pub fn new(quiet: bool, tty: bool, to_stderr: bool) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if tty {
            let target = if to_stderr { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::stdout() };
            return Self::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: HashMap::new(),
                total: None,
                sizes: HashMap::new(),
                done: HashMap::new(),
                to_stderr,
            };
        }
        let out: Box<dyn Write + Send> =
            if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
        Self::Plain { out, last: HashMap::new() }
    }

    /// Prints a line (above the bars on a TTY).
    pub fn line(&mut self, s: &str) {
        match self {
            Self::Quiet => {}
            Self::Plain { out, .. } => {
                let _ = writeln!(out, "{s}");
            }
            Self::Bars { multi, .. } => {
                let _ = multi.println(s);
            }
        }
    }

    /// The manifest is known: set up one bar per layer.
    pub fn started(&mut self, s: &pb::PullStarted) {
        if let Self::Bars { multi, bars, total, sizes, .. } = self {
            let mut sum = 0u64;
            for l in &s.layers {
                if bars.contains_key(&l.digest) {
                    continue;
                }
                let size = l.size.max(0) as u64;
                sum += size;
                sizes.insert(l.digest.clone(), size);
                let b = multi.add(ProgressBar::new(size));
                b.set_style(layer_style());
                b.set_prefix(short_id(&l.digest));
                b.set_message("Waiting");
                bars.insert(l.digest.clone(), b);
            }
            let t = multi.add(ProgressBar::new(sum));
            t.set_style(total_style());
            t.set_message("");
            *total = Some(t);
        }
    }

    /// A blob's progress.
    pub fn blob(&mut self, b: &pb::BlobProgress) {
        let state = pb::BlobState::try_from(b.state).unwrap_or(pb::BlobState::Unspecified);
        match self {
            Self::Quiet => {}
            Self::Plain { out, last } => {
                if last.get(&b.digest) == Some(&b.state) {
                    return;
                }
                last.insert(b.digest.clone(), b.state);
                let text = match state {
                    pb::BlobState::Waiting => "Pulling fs layer".to_string(),
                    pb::BlobState::Shared => "Waiting (another pull is fetching it)".to_string(),
                    pb::BlobState::Downloading => return,
                    pb::BlobState::Retrying => format!("Resuming download ({})", b.message),
                    pb::BlobState::Verifying => "Download complete".to_string(),
                    pb::BlobState::Done => "Pull complete".to_string(),
                    pb::BlobState::AlreadyExists => "Already exists".to_string(),
                    pb::BlobState::Unspecified => return,
                };
                let _ = writeln!(out, "{}: {text}", short_id(&b.digest));
            }
            Self::Bars { bars, total, done, sizes, .. } => {
                let Some(bar) = bars.get(&b.digest) else { return };
                let msg = match state {
                    pb::BlobState::Waiting => "Waiting",
                    pb::BlobState::Shared => "Waiting (shared)",
                    pb::BlobState::Downloading => "Downloading",
                    pb::BlobState::Retrying => "Resuming",
                    pb::BlobState::Verifying => "Verifying Checksum",
                    pb::BlobState::Done => "Pull complete",
                    pb::BlobState::AlreadyExists => "Already exists",
                    pb::BlobState::Unspecified => "",
                };
                let size = sizes.get(&b.digest).copied().unwrap_or(0);
                let pos = match state {
                    pb::BlobState::Done | pb::BlobState::AlreadyExists => size,
                    _ => (b.offset.max(0) as u64).min(size),
                };
                bar.set_position(pos);
                bar.set_message(msg);
                if matches!(state, pb::BlobState::Done | pb::BlobState::AlreadyExists) {
                    bar.finish();
                }
                done.insert(b.digest.clone(), pos);
                if let Some(t) = total {
                    t.set_position(done.values().sum());
                }
            }
        }
    }

    /// Leaves the finished bars on screen; the summary lines follow below them (plain lines).
    pub fn finish(&mut self) {
        if let Self::Bars { total, bars, to_stderr, .. } = self {
            for b in bars.values() {
                b.finish();
            }
            if let Some(t) = total {
                t.finish();
            }
            let mut out: Box<dyn Write + Send> =
                if *to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
            if total.is_some() {
                // indicatif leaves the cursor at the end of the last bar.
                let _ = writeln!(out);
            }
            *self = Self::Plain { out, last: HashMap::new() };
        }
    }
}
