//! Progress bars on stderr, hidden when quiet: one for training steps, one for rows streamed.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn bar(total: u64, hidden: bool, template: &str) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Training steps, from `start` of `steps`.
pub fn steps(steps: u64, start: u64, hidden: bool) -> ProgressBar {
    let template = "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]";
    let bar = bar(steps, hidden, template);
    bar.set_position(start);
    bar
}

/// Rows streamed through an SAE.
pub fn rows(total_rows: u64, hidden: bool) -> ProgressBar {
    let template =
        "{bar:30} {human_pos}/{human_len} rows  {per_sec}  [{elapsed_precise} < {eta_precise}]";
    bar(total_rows, hidden, template)
}
