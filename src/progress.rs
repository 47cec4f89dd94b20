//! Progress for long work on a terminal (`check`, `profile`, `predict`, the demo's
//! training): a bar of the bytes read or the epochs trained, or a spinner with the stage,
//! drawn on stderr only when stderr is a terminal; otherwise nothing extra is written (logs
//! and pipes stay clean).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::stream::Progress;

/// What long work reports as it goes.
pub trait Report {
    /// A new stage ("reading ref.parquet").
    fn stage(&self, what: &str);
    /// Bytes read of the stage's input.
    fn read(&self, p: Progress);
}

/// Reports nothing.
pub struct Quiet;

impl Report for Quiet {
    fn stage(&self, _: &str) {}
    fn read(&self, _: Progress) {}
}

/// A bar on a terminal; nothing elsewhere.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar when stderr is a terminal.
    pub fn on_terminal() -> Bar {
        Bar::drawn(std::io::stderr().is_terminal())
    }

    fn drawn(drawn: bool) -> Bar {
        Bar(drawn.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }))
    }

    /// `done` of `total` units of the stage `what` (the demo's epochs).
    pub fn count(&self, what: &str, done: u64, total: u64) {
        if let Some(bar) = &self.0 {
            if bar.length() != Some(total) {
                let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_length(total);
            }
            bar.set_message(what.to_string());
            bar.set_position(done.min(total));
        }
    }

    /// Done: the bar is cleared.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Report for Bar {
    fn stage(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_style(ProgressStyle::default_spinner());
            bar.set_length(0);
            bar.set_position(0);
            bar.set_message(what.to_string());
        }
    }

    fn read(&self, p: Progress) {
        if let Some(bar) = &self.0 {
            if bar.length() != Some(p.total) {
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_length(p.total);
            }
            bar.set_position(p.done);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The epochs reach the bar as they are trained (what is drawn of them, and when, is
    /// the terminal's and indicatif's rate limit's business, not a test's).
    #[test]
    fn the_epoch_bar_follows_the_count_and_clears() {
        let bar = Bar(Some(ProgressBar::hidden()));
        bar.count("training", 0, 40);
        assert_eq!(
            bar.0.as_ref().map(|b| (b.position(), b.length())),
            Some((0, Some(40)))
        );
        bar.count("training", 17, 40);
        bar.count("training", 41, 40);
        assert_eq!(bar.0.as_ref().map(|b| b.position()), Some(40));
        bar.finish();
        assert!(bar.0.as_ref().is_some_and(|b| b.is_finished()));
        // Off a terminal there is no bar at all.
        assert!(Bar::drawn(false).0.is_none());
    }
}
