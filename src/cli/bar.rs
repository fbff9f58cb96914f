//! A progress bar for long comparisons, copies and drains, on stderr; hidden when stderr is not a
//! terminal.

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

pub struct Bar {
    /// What the counts count.
    unit: &'static str,
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn counting(unit: &'static str) -> Bar {
        Bar { unit, bar: None }
    }
}

/// Comparisons and copies count rows.
impl Default for Bar {
    fn default() -> Bar {
        Bar::counting("rows")
    }
}

impl Progress for Bar {
    fn start(&mut self, label: &str, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {} {{per_sec}} eta {{eta}}",
                self.unit
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        self.bar = Some(bar);
    }

    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
