//! `sluice-bench` against a `sluice` broker started here: a short smoke run must produce a
//! well-formed JSON result. Only the structure is checked, never speed.
//!
//! The broker binary is `$SLUICE_BIN`, or the `sluice` built beside `sluice-bench`, or
//! `target/debug/sluice` of this workspace (build it first with
//! `cargo build -p sluice-broker`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

/// Kills the broker however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `$SLUICE_BIN`; else `sluice` beside this test's `sluice-bench` (same target dir and
/// profile); else the workspace's `target/debug/sluice`.
fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN").filter(|p| !p.is_empty()) {
        let bin = PathBuf::from(p);
        assert!(bin.is_file(), "SLUICE_BIN={} is not a file", bin.display());
        return bin;
    }
    let beside = Path::new(env!("CARGO_BIN_EXE_sluice-bench")).with_file_name("sluice");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice");
    for bin in [&beside, &workspace] {
        if bin.is_file() {
            return bin.clone();
        }
    }
    panic!(
        "broker binary not found at {} or {}: build it with `cargo build -p sluice-broker` \
         (or set SLUICE_BIN)",
        beside.display(),
        workspace.display()
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Waits until something accepts TCP connections on `addr`, or the broker exits.
fn wait_listening(addr: &str, broker: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(st)) = broker.try_wait() {
            panic!("broker exited before listening: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "broker not listening on {addr} after {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd`, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice-bench");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait sluice-bench").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "sluice-bench still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("collect output")
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{} is not an unsigned integer: {cur}", path.join(".")))
}

fn check_summary(s: &Value, what: &str) {
    let keys = [
        "min_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "p99_9_us",
        "p99_99_us",
        "max_us",
    ];
    assert!(u(s, &["count"]) > 0, "{what}: no samples");
    let vals: Vec<u64> = keys.iter().map(|k| u(s, &[k])).collect();
    assert!(
        vals.windows(2).all(|w| w[0] <= w[1]),
        "{what}: percentiles not monotone: {vals:?}"
    );
    assert!(vals[0] > 0, "{what}: zero latency");
    assert!(s["mean_us"].as_f64().is_some(), "{what}: no mean");
}

/// The `floors` object and the per-target ratio to the fdatasync floor: structure only.
fn check_floors(r: &Value, t: &Value, stdout: &str) {
    let f = &r["floors"];
    assert!(f.is_object(), "no floors object: {r}");
    assert!(f["dir"].as_str().is_some(), "floors.dir: {f}");
    assert_eq!(u(f, &["message_size"]), u(r, &["workload", "message_size"]));
    assert!(u(f, &["write_bytes"]) >= u(f, &["message_size"]));
    assert_eq!(
        u(f, &["write_bytes"]) % 4096,
        0,
        "unaligned O_DIRECT writes"
    );
    assert_eq!(u(f, &["tcp_rtt_bytes"]), 64);
    check_summary(&f["tcp_rtt"], "floors.tcp_rtt");
    assert_eq!(u(f, &["tcp_rtt", "count"]), 50);
    assert!(stdout.contains("floor"), "{stdout}");
    // A disk without O_DIRECT is reported as an error instead of numbers.
    if f["fdatasync"].is_null() {
        assert!(f["fdatasync_error"].as_str().is_some(), "floors: {f}");
        assert!(t["produce_ack_p99_9_over_fdatasync_p99_9"].is_null());
    } else {
        check_summary(&f["fdatasync"], "floors.fdatasync");
        assert_eq!(u(f, &["fdatasync", "count"]), 50);
        let x = t["produce_ack_p99_9_over_fdatasync_p99_9"].as_f64();
        assert!(x.is_some_and(|x| x > 0.0), "no ratio to the floor: {t}");
        assert!(stdout.contains("fdatasync floor"), "{stdout}");
    }
}

#[test]
fn smoke_run_against_sluice_yields_a_well_formed_result() {
    let bin = sluice_bin();
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-test-")
        .tempdir()
        .expect("temp dir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("broker.log")).expect("broker log");
    let child = Command::new(&bin)
        .args(["start", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--cores", "1"])
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut broker = KillOnDrop(child);
    wait_listening(&addr, &mut broker.0, Duration::from_secs(30));

    let json = dir.path().join("result.json");
    let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/smoke.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-bench"));
    cmd.arg("--workload")
        .arg(&workload)
        .args(["--duration", "3", "--warmup", "0.5", "--rate", "100"])
        .args(["--drain-timeout", "20"])
        // --json turns the floors on; few samples keep the test fast. The fdatasync floor
        // writes under the target directory (a real disk), not /tmp (maybe tmpfs).
        .args(["--floor-samples", "50", "--floor-dir"])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sluice-bench-floor"))
        .arg("--target")
        .arg(format!("sluice={addr}"))
        .arg("--broker-pid")
        .arg(format!("sluice={}", broker.0.id()))
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(dir.path().join("plot.svg"));
    let out = run_bounded(cmd, Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let broker_log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "sluice-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{broker_log}",
        out.status
    );
    assert!(
        stdout.contains("p99.9") && stdout.contains("end-to-end"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&json).expect("JSON result written");
    let r: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(r["tool"], "sluice-bench");
    assert_eq!(r["workload"]["name"], "smoke");
    assert_eq!(u(&r, &["rounds"]), 1);
    let targets = r["targets"].as_array().expect("targets array");
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!(t["name"], "sluice");
    assert_eq!(t["bootstrap"], addr.as_str());
    check_summary(&t["produce_ack"], "produce_ack");
    check_summary(&t["end_to_end"], "end_to_end");
    for c in ["sent", "acked_in_window", "acked_total", "consumed_total"] {
        assert!(u(t, &["counts", c]) > 0, "counts.{c} is 0: {t}");
    }
    for c in ["unsent", "produce_errors", "consume_errors"] {
        u(t, &["counts", c]);
    }
    assert!(t["achieved_rate_msg_s"].as_f64().expect("achieved rate") > 0.0);
    assert!(
        t["broker_cpu_secs"].as_f64().is_some(),
        "broker CPU not read: {t}"
    );
    let rounds = t["rounds"].as_array().expect("rounds array");
    assert_eq!(rounds.len(), 1);
    check_summary(&rounds[0]["produce_ack"], "round produce_ack");
    check_summary(&rounds[0]["end_to_end"], "round end_to_end");
    assert!(r["machine"]["bench_cpus_allowed"].as_str().is_some());

    check_floors(&r, t, &stdout);

    let svg = std::fs::read_to_string(dir.path().join("plot.svg")).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.contains("sluice"), "bad SVG");

    // The fresh topic the run created is gone again.
    let topic = rounds[0]["topic"]
        .as_str()
        .expect("round topic")
        .to_string();
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("metadata client");
    let md = probe
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert!(
        md.topics().iter().all(|t| t.name() != topic),
        "topic {topic} was not deleted"
    );
}
