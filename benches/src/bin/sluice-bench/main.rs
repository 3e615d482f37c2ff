//! `sluice-bench`: identical open-loop Kafka traffic against one or more endpoints, through
//! one client library (librdkafka via the rdkafka crate), with coordinated-omission-correct
//! HDR histograms of produce→ack and end-to-end latency. See benches/README.md.
//!
//! Producers send at a fixed rate: message `i` is due at a fixed time whatever happened to
//! earlier ones, its payload carries that intended time (µs), and both latencies count from
//! it. Consumers read every partition from its end with `assign` (no consumer group).

mod findmax;
mod floors;
mod plot;
mod report;
mod run;
mod stats;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use report::{Counts, Machine, Report, RoundResult, TargetResult};
use stats::{new_histogram, Summary};
use workload::{Keys, Workload};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Drives identical open-loop traffic against Kafka endpoints and reports latency
/// percentiles (produce→ack and end to end), achieved rate and errors.
#[derive(Parser, Debug)]
#[command(name = "sluice-bench", version)]
struct Args {
    /// Workload file (TOML); the flags below override its fields.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// A target as NAME=HOST:PORT; repeat to compare several. The workload runs against each.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<(String, String)>,
    /// Rounds; each runs the workload once against every target, alternating the order, so
    /// slow spells of the machine land on all targets alike.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Broker process of a target, as NAME=PID: its CPU seconds during the measured window
    /// are read from /proc/PID/stat.
    #[arg(long = "broker-pid", value_parser = parse_pid)]
    broker_pids: Vec<(String, u32)>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG percentile plot (log-scale percentile axis, one line per target).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Before measuring, find each target's highest sustainable rate: step the rate up
    /// from --find-max-start by --find-max-factor until a target cannot keep up (a
    /// producer falls behind its schedule, errors, < 95 % of the rate acked, consumers
    /// fall behind, or p99 over --find-max-p99-ms), then bisect --find-max-refine times.
    /// If the start rate already fails, it steps down instead.
    #[arg(long)]
    find_max: bool,
    /// Measure at this fraction of the maximum found (of the --rate-from target); needs
    /// --find-max.
    #[arg(long, requires = "find_max")]
    rate_fraction: Option<f64>,
    /// Whose maximum --rate-fraction applies to (every target then runs that same rate).
    /// Default: the first target.
    #[arg(long)]
    rate_from: Option<String>,
    /// First rate --find-max tries (default: the workload's rate).
    #[arg(long)]
    find_max_start: Option<f64>,
    #[arg(long, default_value_t = 1.5)]
    find_max_factor: f64,
    #[arg(long, default_value_t = 12)]
    find_max_steps: usize,
    #[arg(long, default_value_t = 3)]
    find_max_refine: usize,
    /// Seconds measured per --find-max step (after --find-max-warmup).
    #[arg(long, default_value_t = 10.0)]
    find_max_duration: f64,
    #[arg(long, default_value_t = 2.0)]
    find_max_warmup: f64,
    #[arg(long, default_value_t = 500.0)]
    find_max_p99_ms: f64,
    /// Measure the floors right before the targets run: O_DIRECT pwrite + fdatasync at
    /// the workload's message size in --floor-dir, and a 64 B loopback TCP round trip.
    /// On by default when --json is given; --no-floors turns it off.
    #[arg(long, conflicts_with = "no_floors")]
    floors: bool,
    #[arg(long)]
    no_floors: bool,
    /// The fdatasync floor writes into a fresh subdirectory of this directory (removed
    /// afterwards). It must be on the brokers' data disk, with O_DIRECT (not tmpfs).
    #[arg(long, default_value = "target/sluice-bench-floor")]
    floor_dir: PathBuf,
    /// Samples of each floor.
    #[arg(long, default_value_t = 2000)]
    floor_samples: usize,
    /// Seconds allowed after the window for outstanding acks and consumer reads.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Do not sync(2) the page cache before each run. By default every run (round, target,
    /// find-max step) starts with the machine's dirty pages written back, so a broker that
    /// writes through the page cache (Kafka) does not leave its deferred writeback to land
    /// in the next target's window.
    #[arg(long)]
    no_settle: bool,
    /// Keep the topics this invocation created (by default they are deleted at the end, so
    /// repeated runs at high rates do not fill the brokers' disks). A `--topic` or a
    /// workload `topic` is never deleted.
    #[arg(long)]
    keep_topic: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    partitions: Option<i32>,
    /// Bytes of value per message (≥ 8).
    #[arg(long)]
    message_size: Option<usize>,
    /// none | random | round-robin:N
    #[arg(long)]
    keys: Option<Keys>,
    #[arg(long)]
    producers: Option<usize>,
    #[arg(long)]
    consumers: Option<usize>,
    /// Total target rate, messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured per round and target.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of unrecorded traffic before each measured window.
    #[arg(long)]
    warmup: Option<f64>,
    #[arg(long)]
    acks: Option<String>,
    #[arg(long)]
    compression: Option<String>,
    #[arg(long)]
    linger_ms: Option<f64>,
    #[arg(long)]
    batch_size: Option<u64>,
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    if name.is_empty() || !addr.contains(':') {
        return Err(format!("expected NAME=HOST:PORT, got {s:?}"));
    }
    Ok((name.to_string(), addr.to_string()))
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid.parse().map_err(|e| format!("bad pid in {s:?}: {e}"))?;
    Ok((name.to_string(), pid))
}

fn workload(a: &Args) -> BenchResult<Workload> {
    let mut w = match &a.workload {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("read workload {}: {e}", p.display()))?;
            Workload::from_toml(&text).map_err(|e| format!("workload {}: {e}", p.display()))?
        }
        None => Workload::default(),
    };
    macro_rules! over {
        ($($f:ident => $field:ident),*) => {
            $(if let Some(v) = a.$f.clone() { w.$field = v; })*
        };
    }
    over!(name => name, topic => topic, partitions => partitions,
        message_size => message_size, keys => keys, producers => producers,
        consumers => consumers, rate => rate, duration => duration_secs,
        warmup => warmup_secs, acks => acks, compression => compression,
        linger_ms => linger_ms, batch_size => batch_size);
    w.validate()?;
    Ok(w)
}

/// User + system CPU seconds of a process (all its threads), from /proc/PID/stat.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

fn cpus_allowed(pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

fn machine() -> Machine {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        // Not available_parallelism(): that honours this process's affinity mask.
        // SAFETY: sysconf only reads a configuration value.
        cpus_online: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
            .unwrap_or(0),
        bench_cpus_allowed: cpus_allowed("self").unwrap_or_default(),
        load_average_at_start: read("/proc/loadavg"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("sluice-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> BenchResult<()> {
    let mut w = workload(&args)?;
    if args.rounds == 0 {
        return Err("--rounds must be ≥ 1".into());
    }
    let mut names = std::collections::HashSet::new();
    for (n, _) in &args.targets {
        if !names.insert(n.as_str()) {
            return Err(format!("target name {n} given twice").into());
        }
    }
    let pids: HashMap<String, u32> = args.broker_pids.iter().cloned().collect();
    for n in pids.keys() {
        if !names.contains(n.as_str()) {
            return Err(format!("--broker-pid {n}: no such target").into());
        }
    }
    let drain = Duration::from_secs_f64(args.drain_timeout.max(0.0));
    let started = unix_ms();

    // One topic per target, created once and reused by every round.
    let mut topics = Vec::new();
    let mut cleanup = TopicCleanup(Vec::new());
    for (name, bootstrap) in &args.targets {
        let topic = if w.topic.is_empty() {
            format!("sluice-bench-{}-{}", w.name, started / 1000)
        } else {
            w.topic.clone()
        };
        eprintln!(
            "[{name}] creating topic {topic} ({} partitions) on {bootstrap}",
            w.partitions
        );
        run::create_topic(bootstrap, &topic, w.partitions).map_err(|e| format!("[{name}] {e}"))?;
        if w.topic.is_empty() && !args.keep_topic {
            cleanup.0.push((bootstrap.clone(), topic.clone()));
        }
        topics.push(topic);
    }

    let n = args.targets.len();
    let mut find_max_results = Vec::new();
    let find_max_opts = args.find_max.then(|| findmax::FindMaxOpts {
        start_rate: args.find_max_start.unwrap_or(w.rate),
        factor: args.find_max_factor,
        max_steps: args.find_max_steps,
        refine: args.find_max_refine,
        duration_secs: args.find_max_duration,
        warmup_secs: args.find_max_warmup,
        max_p99_ms: args.find_max_p99_ms,
        settle: !args.no_settle,
    });
    if let Some(o) = &find_max_opts {
        if !(o.factor > 1.0 && o.start_rate > 0.0 && o.duration_secs > 0.0) {
            return Err("--find-max needs a factor > 1, a start rate > 0, a duration > 0".into());
        }
        for (ti, (name, bootstrap)) in args.targets.iter().enumerate() {
            let fm_drain = drain.min(Duration::from_secs(10));
            let (max, steps) = findmax::find_max(name, bootstrap, &topics[ti], &w, o, fm_drain)
                .map_err(|e| format!("[{name}] find-max: {e}"))?;
            eprintln!("[{name}] max sustainable rate: {max:?} msg/s");
            find_max_results.push((max, steps));
        }
        if let Some(f) = args.rate_fraction {
            if !(f > 0.0 && f.is_finite()) {
                return Err("--rate-fraction must be > 0".into());
            }
            let from = args.rate_from.as_deref().unwrap_or(&args.targets[0].0);
            let ti = args
                .targets
                .iter()
                .position(|(n, _)| n == from)
                .ok_or_else(|| format!("--rate-from {from}: no such target"))?;
            let max = find_max_results[ti]
                .0
                .ok_or_else(|| format!("{from} did not keep up even at the start rate"))?;
            w.rate = f * max;
            eprintln!(
                "measuring at {f} x {from}'s maximum {max:.0} = {:.0} msg/s",
                w.rate
            );
        }
    }
    let mut results: Vec<TargetResult> = args
        .targets
        .iter()
        .enumerate()
        .map(|(ti, (name, bootstrap))| {
            let pid = pids.get(name).copied();
            TargetResult {
                name: name.clone(),
                bootstrap: bootstrap.clone(),
                broker_pid: pid,
                broker_cpus_allowed: pid.and_then(|p| cpus_allowed(&p.to_string())),
                target_rate_msg_s: w.rate,
                max_sustainable_rate_msg_s: find_max_results.get(ti).and_then(|r| r.0),
                find_max_steps: find_max_results
                    .get(ti)
                    .map(|r| r.1.clone())
                    .unwrap_or_default(),
                ..TargetResult::default()
            }
        })
        .collect();
    let floors = ((args.floors || args.json.is_some()) && !args.no_floors).then(|| {
        if !args.no_settle {
            run::settle("floors");
        }
        floors::measure(&args.floor_dir, w.message_size, args.floor_samples.max(1))
    });
    let mut ack_hists: Vec<_> = (0..n).map(|_| new_histogram()).collect();
    let mut e2e_hists: Vec<_> = (0..n).map(|_| new_histogram()).collect();
    let mut bytes = vec![0u64; n];

    for round in 0..args.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for ti in order {
            let (name, bootstrap) = &args.targets[ti];
            eprintln!(
                "[{name}] round {}/{}: {} msg/s for {} s after {} s warm-up",
                round + 1,
                args.rounds,
                w.rate,
                w.duration_secs,
                w.warmup_secs
            );
            let pid = pids.get(name).copied();
            let mut cpu_start = None;
            let mut cpu_used = None;
            let mut on_window = |start: bool| {
                let now = pid.and_then(cpu_secs);
                if start {
                    cpu_start = now;
                } else if let (Some(a), Some(b)) = (cpu_start, now) {
                    cpu_used = Some(b - a);
                }
            };
            if !args.no_settle {
                run::settle(name);
            }
            let o = run::run(bootstrap, &topics[ti], &w, drain, &mut on_window)
                .map_err(|e| format!("[{name}] round {}: {e}", round + 1))?;
            let secs = o.window.secs();
            let counts = Counts {
                sent: o.sent,
                unsent: o.unsent,
                acked_in_window: o.acked_window,
                acked_during_window: o.acked_during_window,
                acked_total: o.acked_total,
                consumed_in_window: o.consumed_window,
                consumed_total: o.consumed_total,
                produce_errors: o.produce_errors,
                consume_errors: o.consume_errors,
            };
            let rr = RoundResult {
                round: round + 1,
                topic: topics[ti].clone(),
                window_secs: secs,
                produce_ack: Summary::of(&o.produce_ack),
                end_to_end: Summary::of(&o.end_to_end),
                achieved_rate_msg_s: o.acked_during_window as f64 / secs,
                achieved_mb_s: o.bytes_acked_during_window as f64 / secs / 1e6,
                counts,
                max_send_lag_us: o.max_send_lag_us,
                broker_cpu_secs: cpu_used,
                first_errors: o.first_errors,
            };
            eprintln!(
                "[{name}] round {}: ack p99.9 {} µs, e2e p99.9 {} µs, {:.0} msg/s, errors {}",
                round + 1,
                rr.produce_ack.p99_9_us,
                rr.end_to_end.p99_9_us,
                rr.achieved_rate_msg_s,
                rr.counts.produce_errors + rr.counts.consume_errors
            );
            for e in &rr.first_errors {
                eprintln!("[{name}]   {e}");
            }
            ack_hists[ti].add(&o.produce_ack)?;
            e2e_hists[ti].add(&o.end_to_end)?;
            bytes[ti] += o.bytes_acked_during_window;
            let t = &mut results[ti];
            t.counts.add(&rr.counts);
            t.window_secs += secs;
            if let Some(c) = cpu_used {
                *t.broker_cpu_secs.get_or_insert(0.0) += c;
            }
            t.rounds.push(rr);
        }
    }
    for (ti, t) in results.iter_mut().enumerate() {
        t.produce_ack = Summary::of(&ack_hists[ti]);
        t.end_to_end = Summary::of(&e2e_hists[ti]);
        t.achieved_rate_msg_s = t.counts.acked_during_window as f64 / t.window_secs;
        t.achieved_mb_s = bytes[ti] as f64 / t.window_secs / 1e6;
        t.broker_cpu_secs_per_gb = t
            .broker_cpu_secs
            .filter(|_| bytes[ti] > 0)
            .map(|c| c / (bytes[ti] as f64 / 1e9));
        t.produce_ack_p99_9_over_fdatasync_p99_9 = floors
            .as_ref()
            .and_then(|f| floors::over_fdatasync_p99_9(f, t.produce_ack.p99_9_us));
    }
    let report = Report {
        tool: "sluice-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_ms: started,
        machine: machine(),
        workload: w,
        rounds: args.rounds,
        find_max: find_max_opts,
        rate_fraction: args.rate_fraction,
        floors,
        targets: results,
    };
    print!("{}", report::table(&report));
    if let Some(path) = &args.plot {
        let names: Vec<&str> = args.targets.iter().map(|t| t.0.as_str()).collect();
        let caption = format!(
            "{}: {:.0} msg/s, {} B, {} partitions, acks={}",
            report.workload.name,
            report.workload.rate,
            report.workload.message_size,
            report.workload.partitions,
            report.workload.acks
        );
        plot::write_svg(
            path,
            &caption,
            &[
                plot::Panel {
                    title: "produce→ack",
                    series: names.iter().copied().zip(ack_hists.iter()).collect(),
                },
                plot::Panel {
                    title: "end to end",
                    series: names.iter().copied().zip(e2e_hists.iter()).collect(),
                },
            ],
        )
        .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Topics this invocation created, deleted when it ends (also on an error).
struct TopicCleanup(Vec<(String, String)>);

impl Drop for TopicCleanup {
    fn drop(&mut self) {
        for (bootstrap, topic) in &self.0 {
            run::delete_topic(bootstrap, topic);
        }
    }
}
