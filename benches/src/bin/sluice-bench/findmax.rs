//! `--find-max`: step the rate up until a target cannot keep up, then narrow the gap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::run::{run, settle, RunOutcome};
use crate::workload::Workload;
use crate::BenchResult;

/// How the search runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindMaxOpts {
    /// First rate tried, msg/s.
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    pub factor: f64,
    /// Most steps up before giving up (the maximum is then reported as "at least").
    pub max_steps: usize,
    /// Bisection steps between the last rate kept up with and the first one not.
    pub refine: usize,
    /// Seconds measured per step, after `warmup_secs`.
    pub duration_secs: f64,
    pub warmup_secs: f64,
    /// A step fails if produce→ack or end-to-end p99 exceeds this (latency runs away).
    pub max_p99_ms: f64,
    /// Write back the page cache before each step (see `run::settle`).
    pub settle: bool,
}

/// One rate tried.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub rate_msg_s: f64,
    pub achieved_msg_s: f64,
    pub produce_ack_p99_us: u64,
    pub end_to_end_p99_us: u64,
    /// Why the target did not keep up; `None` if it did.
    pub failed: Option<String>,
}

/// Whether a run at `rate` kept up: every scheduled message sent, no errors, ≥ 95 % of the
/// rate acked during the window, ≥ 99 % of the window's acked messages read back, and p99
/// of both latencies within `max_p99_us`.
pub fn keeps_up(rate: f64, o: &RunOutcome, max_p99_us: u64) -> Result<(), String> {
    let achieved = o.acked_during_window as f64 / o.window.secs();
    let ack_p99 = o.produce_ack.value_at_quantile(0.99);
    let e2e_p99 = o.end_to_end.value_at_quantile(0.99);
    if o.unsent > 0 {
        Err(format!(
            "producers fell behind: {} messages never sent",
            o.unsent
        ))
    } else if o.produce_errors + o.consume_errors > 0 {
        Err(format!(
            "{} produce and {} consume errors",
            o.produce_errors, o.consume_errors
        ))
    } else if achieved < 0.95 * rate {
        Err(format!("achieved {achieved:.0} of {rate:.0} msg/s"))
    } else if (o.consumed_window as f64) < 0.99 * o.acked_window as f64 {
        Err(format!(
            "consumers read {} of {} acked messages",
            o.consumed_window, o.acked_window
        ))
    } else if o.produce_ack.is_empty() || o.end_to_end.is_empty() {
        Err("no latency samples".into())
    } else if ack_p99 > max_p99_us || e2e_p99 > max_p99_us {
        Err(format!(
            "p99 latency {:.1} ms ack, {:.1} ms end to end",
            ack_p99 as f64 / 1e3,
            e2e_p99 as f64 / 1e3
        ))
    } else {
        Ok(())
    }
}

/// Searches the highest rate `bootstrap` keeps up with. Returns it (`None` if not even the
/// start rate) and every step tried.
pub fn find_max(
    name: &str,
    bootstrap: &str,
    topic: &str,
    w: &Workload,
    o: &FindMaxOpts,
    drain: Duration,
) -> BenchResult<(Option<f64>, Vec<Step>)> {
    let mut steps = Vec::new();
    let try_rate = |rate: f64, steps: &mut Vec<Step>| -> BenchResult<bool> {
        let mut w = w.clone();
        w.rate = rate;
        w.duration_secs = o.duration_secs;
        w.warmup_secs = o.warmup_secs;
        if o.settle {
            settle(name);
        }
        let out = run(bootstrap, topic, &w, drain, &mut |_| {})?;
        let verdict = keeps_up(rate, &out, (o.max_p99_ms * 1000.0) as u64);
        let step = Step {
            rate_msg_s: rate,
            achieved_msg_s: out.acked_during_window as f64 / out.window.secs(),
            produce_ack_p99_us: out.produce_ack.value_at_quantile(0.99),
            end_to_end_p99_us: out.end_to_end.value_at_quantile(0.99),
            failed: verdict.err(),
        };
        eprintln!(
            "[{name}] find-max {:.0} msg/s: {}",
            rate,
            step.failed.as_deref().unwrap_or("kept up")
        );
        let ok = step.failed.is_none();
        steps.push(step);
        Ok(ok)
    };
    let mut good = None;
    let mut bad = None;
    let mut rate = o.start_rate;
    for _ in 0..o.max_steps.max(1) {
        if try_rate(rate, &mut steps)? {
            good = Some(rate);
            if bad.is_some() {
                break;
            }
            rate *= o.factor;
        } else {
            bad = Some(rate);
            if good.is_some() {
                break;
            }
            // Even the start rate is too much: step down until a rate holds.
            rate /= o.factor;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (good, bad) {
        for _ in 0..o.refine {
            let mid = (lo * hi).sqrt();
            if try_rate(mid, &mut steps)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        good = Some(lo);
    }
    Ok((good, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, Window};

    fn outcome(acked: u64, p99_us: u64) -> RunOutcome {
        let mut h = new_histogram();
        for _ in 0..100 {
            h.record(p99_us).unwrap();
        }
        RunOutcome {
            window: Window {
                start_us: 0,
                end_us: 10_000_000,
            },
            produce_ack: h.clone(),
            end_to_end: h,
            sent: acked,
            unsent: 0,
            acked_window: acked,
            acked_during_window: acked,
            acked_total: acked,
            consumed_window: acked,
            consumed_total: acked,
            produce_errors: 0,
            consume_errors: 0,
            first_errors: Vec::new(),
            bytes_acked_during_window: 0,
            max_send_lag_us: 0,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(keeps_up(1000.0, &outcome(10_000, 5_000), 100_000), Ok(()));
        assert!(keeps_up(1000.0, &outcome(9_000, 5_000), 100_000).is_err());
        assert!(keeps_up(1000.0, &outcome(10_000, 200_000), 100_000).is_err());
        let mut o = outcome(10_000, 5_000);
        o.unsent = 1;
        assert!(keeps_up(1000.0, &o, 100_000).is_err());
        let mut o = outcome(10_000, 5_000);
        o.consumed_window = 9_000;
        assert!(keeps_up(1000.0, &o, 100_000).is_err());
    }
}
