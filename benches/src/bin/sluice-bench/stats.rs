//! The time and histogram arithmetic, kept pure so it can be tested on synthetic delays.
//!
//! Every time is microseconds on one process-wide clock ([`Clock`]): a monotonic `Instant`
//! anchored once to the Unix epoch, so a timestamp written into a payload by a producer
//! thread and read back by a consumer thread of the same process compare exactly.
//!
//! Coordinated omission: a producer sends message `i` of its stream at the *intended* time
//! [`intended_us`] whatever happened to earlier messages, and latency is counted from that
//! intended time ([`latency_us`]), not from when the send call actually ran. A stall of the
//! broker (or of the load generator itself) therefore shows up in every message it delays,
//! spread from the stall's length down to zero, instead of as one slow sample.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds (one hour); larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Microseconds since the Unix epoch, advanced by a monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_epoch_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base = Instant::now();
        let base_epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            base,
            base_epoch_us,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.base_epoch_us + self.base.elapsed().as_micros() as u64
    }

    /// The `Instant` at which `now_us()` reads `us` (for sleeping until an intended time).
    pub fn instant_at(&self, us: u64) -> Instant {
        self.base + std::time::Duration::from_micros(us.saturating_sub(self.base_epoch_us))
    }
}

/// Intended send time of message `i` of a stream at `rate` msg/s whose message 0 is due
/// at `start_us`. Computed from `i`, never by adding periods, so rounding does not drift.
pub fn intended_us(start_us: u64, rate: f64, i: u64) -> u64 {
    start_us + (i as f64 * 1e6 / rate) as u64
}

/// Latency of a message intended at `intended_us` and done (acked, or read by a consumer)
/// at `done_us`; zero if `done_us` is earlier.
pub fn latency_us(intended_us: u64, done_us: u64) -> u64 {
    done_us.saturating_sub(intended_us)
}

/// The measured part of a run: messages intended in `[start_us, end_us)` are recorded,
/// those of the warm-up before it are not.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start_us: u64,
    pub end_us: u64,
}

impl Window {
    pub fn contains(&self, us: u64) -> bool {
        us >= self.start_us && us < self.end_us
    }

    pub fn secs(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 1e6
    }
}

/// An empty latency histogram in µs, 1 µs .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records the latency of one message into `hist` (clamped to the histogram's range).
pub fn record(hist: &mut Histogram<u64>, intended_us: u64, done_us: u64) {
    let v = latency_us(intended_us, done_us).clamp(1, MAX_LATENCY_US);
    hist.saturating_record(v);
}

/// Percentiles of one histogram, in µs.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p99_9_us: h.value_at_quantile(0.999),
            p99_99_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: f64 = 1000.0;
    const START: u64 = 1_000_000_000;

    /// A synthetic broker: 1 ms service time, except that nothing completes during a stall
    /// of `stall_us` beginning at `stall_at_us` (everything caught in it completes 1 ms
    /// after the stall ends). Returns the completion time of a message sent at `sent_us`.
    fn done_at(sent_us: u64, stall_at_us: u64, stall_us: u64) -> u64 {
        let service = 1_000;
        if sent_us >= stall_at_us && sent_us < stall_at_us + stall_us {
            stall_at_us + stall_us + service
        } else {
            sent_us + service
        }
    }

    #[test]
    fn schedule_is_fixed_and_does_not_drift() {
        assert_eq!(intended_us(START, RATE, 0), START);
        assert_eq!(intended_us(START, RATE, 1), START + 1_000);
        assert_eq!(intended_us(START, 3.0, 3), START + 1_000_000);
        // 10 million messages at 3 msg/s: computed from i, so still exact to the µs.
        assert_eq!(intended_us(0, 3.0, 30_000_000), 10_000_000_000_000);
        assert_eq!(latency_us(10, 5), 0);
        assert_eq!(latency_us(5, 10), 5);
    }

    /// 10 s at 1000 msg/s with a 100 ms stall 5 s in: the stall must appear as about
    /// rate × 0.1 = 100 slow samples spread evenly from ~100 ms down to ~1 ms, not as one.
    #[test]
    fn stall_shows_up_in_every_message_it_delays() {
        let stall_at = START + 5_000_000;
        let stall = 100_000;
        let n = (RATE * 10.0) as u64;
        let mut h = new_histogram();
        for i in 0..n {
            let intended = intended_us(START, RATE, i);
            record(&mut h, intended, done_at(intended, stall_at, stall));
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, n);
        assert_eq!(s.min_us, 1_000);
        assert!((100_000..=101_100).contains(&s.max_us), "max {}", s.max_us);
        // 100 of 10,000 samples are delayed: 1 %.
        let slow = h.count_between(2_000, MAX_LATENCY_US);
        assert!((99..=101).contains(&slow), "{slow} samples over 2 ms");
        // Spread evenly: about half of them over 50 ms, a tenth over 90 ms.
        let over_50 = h.count_between(51_000, MAX_LATENCY_US);
        assert!((48..=52).contains(&over_50), "{over_50} samples over 50 ms");
        let over_90 = h.count_between(91_000, MAX_LATENCY_US);
        assert!((9..=11).contains(&over_90), "{over_90} samples over 90 ms");
        // p99.9 is the 10th slowest sample: ~91 ms; p99 sits at the edge of the stall.
        assert!(
            (88_000..=93_000).contains(&s.p99_9_us),
            "p99.9 {}",
            s.p99_9_us
        );
        assert!(s.p99_us <= 2_100, "p99 {}", s.p99_us);
        assert_eq!(s.p50_us, 1_000);

        // The same stall timed from the actual send of a closed-loop sender (one request
        // at a time, next sent when the previous completes) yields a single slow sample:
        // the coordinated omission the open-loop schedule avoids.
        let mut closed = new_histogram();
        let end = START + 10_000_000;
        let mut t = START;
        while t < end {
            let done = done_at(t, stall_at, stall);
            record(&mut closed, t, done);
            t = done;
        }
        assert_eq!(closed.count_between(2_000, MAX_LATENCY_US), 1);
    }

    #[test]
    fn window_and_clamping() {
        let w = Window {
            start_us: 10,
            end_us: 20,
        };
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
        let mut h = new_histogram();
        record(&mut h, 5, 5);
        record(&mut h, 0, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
    }
}
