//! What a run measured: JSON-serializable results, the human table, and machine facts.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

pub const THROUGHPUT_GOAL: f64 = 0.90;
pub const LATENCY_GOAL: f64 = 1.2;

#[derive(Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub unix_time: u64,
    pub machine: Machine,
    pub config: Config,
    pub throughput: Vec<Throughput>,
    pub latency: Option<Latency>,
}

#[derive(Serialize)]
pub struct Machine {
    /// CPUs online on the machine (`nproc` without an affinity mask).
    pub cpus_online: usize,
    pub mem_total_bytes: Option<u64>,
    pub kernel: Option<String>,
    pub data_dir_fs: String,
    /// CPUs this process may run on (what `taskset` left it).
    pub cpus_allowed: Option<String>,
    /// /proc/loadavg when the run started: other work on the machine skews the numbers.
    pub loadavg_at_start: Option<String>,
}

#[derive(Serialize)]
pub struct Config {
    pub sizes: Vec<usize>,
    pub producers: usize,
    pub tput_secs: f64,
    pub tput_rounds: usize,
    pub lat_size: usize,
    pub lat_rate: f64,
    pub lat_secs: f64,
    pub lat_rounds: usize,
    pub warmup_secs: f64,
}

#[derive(Serialize)]
pub struct Throughput {
    pub batch_bytes: usize,
    pub producers: usize,
    pub log: TputSide,
    pub raw: TputSide,
    /// log MB/s over raw MB/s, all rounds together; the goal is at least 0.90.
    pub ratio: f64,
    /// Median of the per-round ratios: less swayed by one noisy round.
    pub median_round_ratio: f64,
    /// Reference, not a goal: raw writes where every fdatasync carries one batch from each
    /// producer (the most a group can hold), for one round's time.
    pub raw_full_groups: TputSide,
    pub rounds: Vec<TputRound>,
}

#[derive(Serialize, Default, Clone, Copy)]
pub struct TputSide {
    /// Batch bytes made durable (both sides write the same ones).
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub fsyncs: u64,
    /// Bytes handed to the device in whole blocks (raw only; the log's are not observable).
    pub device_bytes: Option<u64>,
}

impl TputSide {
    pub fn add(&mut self, o: &TputSide) {
        self.bytes += o.bytes;
        self.secs += o.secs;
        self.fsyncs += o.fsyncs;
        self.device_bytes = match (self.device_bytes, o.device_bytes) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.mb_per_s = mb_per_s(self.bytes, self.secs);
    }
}

pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    }
}

#[derive(Serialize)]
pub struct TputRound {
    pub log_mb_per_s: f64,
    pub raw_mb_per_s: f64,
    pub ratio: f64,
    pub fsyncs: u64,
    pub avg_batches_per_fsync: f64,
    /// Fewest and most batches one producer got durable: far apart means flush callers starve.
    pub producer_min_batches: u64,
    pub producer_max_batches: u64,
}

#[derive(Serialize)]
pub struct Latency {
    pub batch_bytes: usize,
    pub rate_per_s: f64,
    pub log: Percentiles,
    pub raw: Percentiles,
    /// log p99.9 over raw p99.9; the goal is at most 1.2.
    pub ratio_p999: f64,
    pub ratio_p99: f64,
    pub ratio_p50: f64,
    /// Each round runs both sides, log first on even rounds and raw first on odd ones.
    pub rounds: Vec<LatRound>,
}

#[derive(Serialize)]
pub struct LatRound {
    pub log: Percentiles,
    pub raw: Percentiles,
}

/// Latencies in microseconds.
#[derive(Serialize, Clone, Copy)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1e3;
        Percentiles {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }
}

/// Median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if !v.len().is_multiple_of(2) {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "machine: {} cpus online (allowed: {}), {:.1} GiB, kernel {}, data dir on {}, load {}",
        m.cpus_online,
        m.cpus_allowed.as_deref().unwrap_or("?"),
        m.mem_total_bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64,
        m.kernel.as_deref().unwrap_or("?"),
        m.data_dir_fs,
        m.loadavg_at_start.as_deref().unwrap_or("?"),
    );
    if !r.throughput.is_empty() {
        let c = &r.config;
        let _ = writeln!(
            s,
            "\nThroughput: {} producers looping append -> flush, {} round(s) of {} s per size;\n\
             raw = the same bytes as one O_DIRECT stream, fdatasync after exactly the bytes each of the\n\
             log's fdatasyncs covered (MB = 10^6 B; median = of the per-round ratios;\n\
             batches/producer = fewest..most batches one producer got durable in a round;\n\
             raw@K = reference floor with one batch from each of the K producers per fdatasync)",
            c.producers, c.tput_rounds, c.tput_secs
        );
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>17} {:>10} {:>12}",
            "batch",
            "log MB/s",
            "raw MB/s",
            "log/raw",
            "median",
            "fsyncs",
            "KiB/fsync",
            "batches/producer",
            "goal>=90%",
            "raw@K MB/s"
        );
        for t in &r.throughput {
            let min = t.rounds.iter().map(|r| r.producer_min_batches).min();
            let max = t.rounds.iter().map(|r| r.producer_max_batches).max();
            let _ = writeln!(
                s,
                "{:<8} {:>9.1} {:>9.1} {:>7.1}% {:>7.1}% {:>8} {:>10.1} {:>17} {:>10} {:>12.1}",
                size_label(t.batch_bytes),
                t.log.mb_per_s,
                t.raw.mb_per_s,
                t.ratio * 100.0,
                t.median_round_ratio * 100.0,
                t.log.fsyncs,
                t.log.bytes as f64 / t.log.fsyncs.max(1) as f64 / 1024.0,
                format!("{}..{}", min.unwrap_or(0), max.unwrap_or(0)),
                verdict(t.ratio >= THROUGHPUT_GOAL),
                t.raw_full_groups.mb_per_s,
            );
        }
        for t in &r.throughput {
            let per_fsync = t.log.bytes as f64 / t.log.fsyncs.max(1) as f64 / t.batch_bytes as f64;
            let min = t.rounds.iter().map(|r| r.producer_min_batches).min();
            let max = t.rounds.iter().map(|r| r.producer_max_batches).max();
            if t.producers > 1 && per_fsync < 1.5 {
                let _ = writeln!(
                    s,
                    "NOTE {}: group commit did not group: {} producers, {:.2} batches per fdatasync.",
                    size_label(t.batch_bytes),
                    t.producers,
                    per_fsync
                );
            }
            if let (Some(min), Some(max)) = (min, max) {
                if t.producers > 1 && min.saturating_mul(10) < max {
                    let _ = writeln!(
                        s,
                        "NOTE {}: flush callers starve: one producer got {max} batches durable in a \
                         round, another only {min}.",
                        size_label(t.batch_bytes)
                    );
                }
            }
        }
    }
    if let Some(l) = &r.latency {
        let c = &r.config;
        let _ = writeln!(
            s,
            "\nDurable-append latency: {} batches, open loop at {}/s, {} alternating round(s) of {} s\n\
             per side; from the intended send time to durable (ms)",
            size_label(l.batch_bytes),
            l.rate_per_s,
            c.lat_rounds,
            c.lat_secs
        );
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "samples", "p50", "p99", "p99.9", "p99.99", "max"
        );
        for (name, p) in [("log", &l.log), ("raw floor", &l.raw)] {
            let _ = writeln!(
                s,
                "{:<10} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                name,
                p.samples,
                p.p50_us / 1e3,
                p.p99_us / 1e3,
                p.p999_us / 1e3,
                p.p9999_us / 1e3,
                p.max_us / 1e3
            );
        }
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>7.2}x {:>7.2}x {:>7.2}x {:>7.2}x {:>7.2}x",
            "log/raw",
            "",
            l.ratio_p50,
            l.ratio_p99,
            l.ratio_p999,
            ratio(l.log.p9999_us, l.raw.p9999_us),
            ratio(l.log.max_us, l.raw.max_us)
        );
        let _ = writeln!(
            s,
            "p99.9 goal <= {LATENCY_GOAL}x: {}",
            verdict(l.ratio_p999 <= LATENCY_GOAL)
        );
        let _ = writeln!(s, "per round p99.9 (ms), log / raw:");
        for (i, rd) in l.rounds.iter().enumerate() {
            let _ = writeln!(
                s,
                "  round {:>2} ({} first): {:>8.3} / {:>8.3}",
                i + 1,
                if i % 2 == 0 { "log" } else { "raw" },
                rd.log.p999_us / 1e3,
                rd.raw.p999_us / 1e3
            );
        }
    }
    s
}

pub fn machine(data_dir: &Path) -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem_total_bytes = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let cpus_allowed = status.as_deref().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
    });
    Machine {
        // SAFETY: sysconf only reads a system value.
        cpus_online: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
            .unwrap_or(0),
        mem_total_bytes,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
        data_dir_fs: fs_type(data_dir),
        cpus_allowed,
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    }
}

/// File system type of `path` by its statfs magic number.
fn fs_type(path: &Path) -> String {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a plain C struct that statfs
    // fills in; it is only read after statfs reports success.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return "unknown".into();
        }
        st.f_type as u64
    };
    match magic {
        0xef53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0xf2f5_2010 => "f2fs".into(),
        m => format!("unknown (statfs magic {m:#x})"),
    }
}
