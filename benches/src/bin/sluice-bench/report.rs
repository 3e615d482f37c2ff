//! The JSON result and the terminal table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::findmax::{FindMaxOpts, Step};
use crate::floors::Floors;
use crate::stats::Summary;
use crate::workload::Workload;

#[derive(Serialize, Deserialize, Debug)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// Unix milliseconds when the run started.
    pub started_unix_ms: u64,
    pub machine: Machine,
    pub workload: Workload,
    pub rounds: usize,
    /// The --find-max settings, if it ran.
    pub find_max: Option<FindMaxOpts>,
    /// The measured rate was this fraction of a maximum found by --find-max.
    pub rate_fraction: Option<f64>,
    /// Hardware floors measured right before the targets ran (`None`: not measured).
    #[serde(default)]
    pub floors: Option<Floors>,
    pub targets: Vec<TargetResult>,
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Machine {
    pub hostname: String,
    pub kernel: String,
    pub cpus_online: usize,
    /// CPUs the load generator may run on (its affinity mask, e.g. from `taskset`).
    pub bench_cpus_allowed: String,
    pub load_average_at_start: String,
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Counts {
    /// Messages handed to the client library, warm-up included.
    pub sent: u64,
    /// Messages the fixed schedule called for that were never sent (the producer was still
    /// behind a drain timeout after the end).
    pub unsent: u64,
    /// Acked messages whose intended send time is in the measured window.
    pub acked_in_window: u64,
    /// Acks received during the measured window.
    pub acked_during_window: u64,
    pub acked_total: u64,
    /// Messages intended in the window that the consumers read.
    pub consumed_in_window: u64,
    pub consumed_total: u64,
    pub produce_errors: u64,
    pub consume_errors: u64,
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct RoundResult {
    pub round: usize,
    pub topic: String,
    pub window_secs: f64,
    pub produce_ack: Summary,
    pub end_to_end: Summary,
    pub counts: Counts,
    /// Acks received during the window per second of window.
    pub achieved_rate_msg_s: f64,
    /// Payload bytes acked during the window per second, in MB/s (10^6 B/s).
    pub achieved_mb_s: f64,
    pub max_send_lag_us: u64,
    /// Broker CPU seconds (user + system) used during the window, if its pid was given.
    pub broker_cpu_secs: Option<f64>,
    pub first_errors: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct TargetResult {
    pub name: String,
    pub bootstrap: String,
    pub broker_pid: Option<u32>,
    /// The broker's affinity mask, read from /proc when its pid was given.
    pub broker_cpus_allowed: Option<String>,
    pub target_rate_msg_s: f64,
    /// Over all rounds: histograms merged, counts summed.
    pub produce_ack: Summary,
    pub end_to_end: Summary,
    pub counts: Counts,
    pub window_secs: f64,
    pub achieved_rate_msg_s: f64,
    pub achieved_mb_s: f64,
    pub broker_cpu_secs: Option<f64>,
    /// Broker CPU seconds per GB (10^9 B) of payload acked during the windows.
    pub broker_cpu_secs_per_gb: Option<f64>,
    /// produce→ack p99.9 as a multiple of the fdatasync floor's p99.9 (goal ≤ 1.5).
    #[serde(default)]
    pub produce_ack_p99_9_over_fdatasync_p99_9: Option<f64>,
    /// Found by --find-max (`None`: not run, or not even the start rate kept up). Only a
    /// lower bound if every step in `find_max_steps` kept up.
    pub max_sustainable_rate_msg_s: Option<f64>,
    pub find_max_steps: Vec<Step>,
    pub rounds: Vec<RoundResult>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.unsent += o.unsent;
        self.acked_in_window += o.acked_in_window;
        self.acked_during_window += o.acked_during_window;
        self.acked_total += o.acked_total;
        self.consumed_in_window += o.consumed_in_window;
        self.consumed_total += o.consumed_total;
        self.produce_errors += o.produce_errors;
        self.consume_errors += o.consume_errors;
    }
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}x", a as f64 / b as f64)
    }
}

fn summary_row(out: &mut String, target: &str, what: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "{target:<12} {what:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        s.count,
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p99_9_us),
        ms(s.p99_99_us),
        ms(s.max_us)
    );
}

/// The terminal table: latency percentiles per target, then rates and errors, then the
/// ratios of every target to the first.
pub fn table(r: &Report) -> String {
    let w = &r.workload;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload {}: {} partitions, {} B messages, keys {}, {} producers, {} consumers, \
         {} msg/s, acks={}, compression={}, linger.ms={}, batch.size={}",
        w.name,
        w.partitions,
        w.message_size,
        w.keys,
        w.producers,
        w.consumers,
        w.rate,
        w.acks,
        w.compression,
        w.linger_ms,
        w.batch_size
    );
    let _ = writeln!(
        out,
        "{} round(s) of {} s measured after {} s warm-up; load generator on CPUs {}",
        r.rounds, w.duration_secs, w.warmup_secs, r.machine.bench_cpus_allowed
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "target", "latency ms", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for t in &r.targets {
        summary_row(&mut out, &t.name, "produce→ack", &t.produce_ack);
        summary_row(&mut out, &t.name, "end-to-end", &t.end_to_end);
    }
    if let Some(f) = &r.floors {
        let rows = [
            ("fdatasync", &f.fdatasync, &f.fdatasync_error),
            ("tcp rtt", &f.tcp_rtt, &f.tcp_rtt_error),
        ];
        for (what, s, e) in rows {
            match (s, e) {
                (Some(s), _) => summary_row(&mut out, "floor", what, s),
                (None, e) => {
                    let _ = writeln!(
                        out,
                        "{:<12} {what:<12} not measured: {}",
                        "floor",
                        e.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "floors, measured just before the targets: O_DIRECT pwrite of {} B ({} B \
             messages) + fdatasync, one at a time, in {}; loopback TCP round trip of {} B",
            f.write_bytes, f.message_size, f.dir, f.tcp_rtt_bytes
        );
        for t in &r.targets {
            if let Some(x) = t.produce_ack_p99_9_over_fdatasync_p99_9 {
                let _ = writeln!(
                    out,
                    "{:<12} produce→ack p99.9 = {x:.2}x the fdatasync floor's p99.9 (goal ≤ 1.5x)",
                    t.name
                );
            }
        }
    }
    let _ = writeln!(out);
    for t in &r.targets {
        let c = &t.counts;
        let cpu = match (t.broker_cpu_secs, t.broker_cpu_secs_per_gb) {
            (Some(s), Some(g)) => format!(
                ", broker CPU {s:.2} s ({g:.1} s/GB, CPUs {})",
                t.broker_cpus_allowed.as_deref().unwrap_or("?")
            ),
            (Some(s), None) => format!(", broker CPU {s:.2} s"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<12} target {:.0} msg/s, achieved {:.0} msg/s ({:.2} MB/s); sent {}, unsent {}, \
             acked {}, consumed {}; errors: produce {}, consume {}{cpu}",
            t.name,
            t.target_rate_msg_s,
            t.achieved_rate_msg_s,
            t.achieved_mb_s,
            c.sent,
            c.unsent,
            c.acked_total,
            c.consumed_total,
            c.produce_errors,
            c.consume_errors
        );
        if r.find_max.is_some() {
            let _ = writeln!(
                out,
                "{:<12} max sustainable rate: {}",
                "",
                match t.max_sustainable_rate_msg_s {
                    Some(m) if t.find_max_steps.iter().all(|s| s.failed.is_none()) => format!(
                        "at least {m:.0} msg/s (kept up at every one of {} steps)",
                        t.find_max_steps.len()
                    ),
                    Some(m) => format!("{m:.0} msg/s ({} steps)", t.find_max_steps.len()),
                    None => "below the start rate".into(),
                }
            );
        }
        if c.consumed_in_window < c.acked_in_window {
            let _ = writeln!(
                out,
                "{:<12} NOTE: {} messages acked in the window were not read back in time",
                "",
                c.acked_in_window - c.consumed_in_window
            );
        }
    }
    if r.targets.len() > 1 {
        let base = &r.targets[0];
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "ratio to {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            base.name, "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for t in &r.targets[1..] {
            for (what, a, b) in [
                ("produce→ack", &t.produce_ack, &base.produce_ack),
                ("end-to-end", &t.end_to_end, &base.end_to_end),
            ] {
                let _ = writeln!(
                    out,
                    "{:<8} {what:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    t.name,
                    ratio(a.p50_us, b.p50_us),
                    ratio(a.p90_us, b.p90_us),
                    ratio(a.p99_us, b.p99_us),
                    ratio(a.p99_9_us, b.p99_9_us),
                    ratio(a.p99_99_us, b.p99_99_us),
                    ratio(a.max_us, b.max_us)
                );
            }
        }
    }
    out
}
