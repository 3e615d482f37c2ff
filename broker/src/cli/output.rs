//! Rendering: aligned text tables, JSON documents, and progress on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::client::{CliError, Result};

/// How often a progress line is redrawn; often enough to look alive, rarely enough to cost
/// nothing next to the work it reports.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            let pad = widths[i].saturating_sub(c.chars().count());
            l.push_str(&" ".repeat(pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(|s| s.as_str()));
    }
    print(&out)
}

/// Prints one JSON document.
pub fn json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a Value always serializes");
    print(&(text + "\n"))
}

/// Writes to stdout, turning a closed pipe (`| head`) into an error rather than a panic.
pub fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| CliError::Local {
            what: "writing to stdout".into(),
            source,
        })
}

/// A one-line progress report on stderr, drawn only when stderr is a terminal so piped
/// and scripted runs stay quiet.
pub struct Progress {
    enabled: bool,
    label: &'static str,
    total: Option<u64>,
    drawn_at: Option<Instant>,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            label,
            total,
            drawn_at: None,
        }
    }

    pub fn update(&mut self, done: u64) {
        if !self.enabled
            || self
                .drawn_at
                .is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL)
        {
            return;
        }
        self.drawn_at = Some(Instant::now());
        let text = match self.total {
            Some(t) => format!("\r{} {done}/{t}", self.label),
            None => format!("\r{} {done}", self.label),
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }

    /// Erases the progress line, if one was drawn.
    pub fn finish(&mut self) {
        if self.drawn_at.take().is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}
