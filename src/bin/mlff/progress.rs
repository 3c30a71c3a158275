//! Progress of a long run: on a terminal an indicatif bar with the rate and the time
//! left; otherwise (a log file, a pipe, CI) a plain line at most every ten seconds and
//! at the end, so that redirected output stays readable.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Plain lines no more often than this.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    first: u64,
    bar: Option<ProgressBar>,
    start: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// A run of `what` from `first` to `total` `unit`s (steps).
    pub fn new(what: &'static str, unit: &'static str, first: u64, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(&format!(
                "{what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::new(total).with_style(style);
            bar.set_position(first);
            bar.reset_eta();
            bar
        });
        Progress { what, unit, total, first, bar, start: Instant::now(), last_line: None }
    }

    /// `done` of the total so far, and a short note (energies, frames left).
    pub fn set(&mut self, done: u64, note: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(note.to_string());
            return;
        }
        let now = Instant::now();
        if done < self.total && self.last_line.is_some_and(|t| now - t < PLAIN_EVERY) {
            return;
        }
        self.last_line = Some(now);
        let seconds = (now - self.start).as_secs_f64();
        let rate = (done - self.first.min(done)) as f64 / seconds.max(1e-9);
        let left = if rate > 0.0 { (self.total.saturating_sub(done)) as f64 / rate } else { f64::NAN };
        eprintln!(
            "{}: {done}/{} {} ({:.0}%), {rate:.1} {}/s, {:.0} s left  {note}",
            self.what,
            self.total,
            self.unit,
            100.0 * done as f64 / self.total.max(1) as f64,
            self.unit,
            left
        );
    }

    /// Leaves the bar's last state on the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
