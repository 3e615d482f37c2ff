//! Shared harness for the broker's integration tests.
//!
//! `Broker` runs one `sluice` process on free loopback ports with a temporary data
//! directory and kills it when dropped. Two environment variables change what it runs:
//!
//! - `SLUICE_BOOTSTRAP=host:port[,host:port...]`: use already running brokers (Sluice or
//!   Apache Kafka);
//!   nothing is started, and tests that need to kill or restart the broker fail, saying to unset it.
//! - `SLUICE_TEST_KAFKA_SH=path/to/benches/kafka/kafka.sh`: run a real one-node Apache Kafka
//!   through that script instead of `sluice`, with the same lifecycle (kill -9, SIGTERM,
//!   restart on the same data dir). Used to check the tests themselves against Kafka.
//! - `SLUICE_TEST_REPLICATION_FACTOR=N` (default 1): the replication factor of the topics
//!   `create_topic` makes, for a `SLUICE_BOOTSTRAP` cluster.
//!
//! The `sluice` child is started with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the
//! thread that started it even if the test process is killed or a test times out: start
//! and restart a `Broker` from the thread that owns it (the test's own thread, or the
//! thread handed to `run_bounded`).
//!
//! Also here: rdkafka client helpers and raw-socket Kafka framing built on kafka-protocol.
#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, GroupId, OffsetCommitRequest, OffsetFetchRequest,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, Request, StrBytes,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long a broker may take to accept a valid ApiVersions request after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-call timeout for rdkafka admin and metadata calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ broker harness

/// Options for starting a `sluice` process.
#[derive(Clone, Debug)]
pub struct BrokerOpts {
    /// `--cores N`.
    pub cores: usize,
    /// Appended to the command line after the harness's own flags.
    pub extra_args: Vec<String>,
    /// `RLIMIT_NOFILE` (soft and hard) of the broker process, set in the child before exec.
    pub nofile: Option<u64>,
    /// Environment variables set for the broker process.
    pub env: Vec<(String, String)>,
}

impl Default for BrokerOpts {
    fn default() -> Self {
        BrokerOpts {
            cores: 2,
            extra_args: Vec::new(),
            nofile: None,
            env: Vec::new(),
        }
    }
}

enum Backend {
    /// The `sluice` binary of this crate.
    Sluice { child: Mutex<Option<Child>> },
    /// A broker somebody else runs (`SLUICE_BOOTSTRAP`).
    External,
    /// Apache Kafka through `benches/kafka/kafka.sh` (`SLUICE_TEST_KAFKA_SH`).
    KafkaSh { script: PathBuf },
}

/// One broker under test.
pub struct Broker {
    backend: Backend,
    opts: BrokerOpts,
    /// Holds `data/` and `broker.log`; `None` for an external broker.
    dir: Option<tempfile::TempDir>,
    port: u16,
    admin_port: u16,
    bootstrap: String,
}

impl Broker {
    /// Starts a broker with the default options (`--cores 2`).
    pub fn start() -> Broker {
        Broker::start_with(BrokerOpts::default())
    }

    /// Starts a broker with `--cores cores`.
    pub fn start_cores(cores: usize) -> Broker {
        Broker::start_with(BrokerOpts {
            cores,
            ..BrokerOpts::default()
        })
    }

    /// Starts Apache Kafka through `benches/kafka/kafka.sh`, whatever the environment
    /// says: for tests that compare Sluice with it. Fails, naming what to install, when
    /// Java or the Kafka jars are missing.
    pub fn start_reference_kafka() -> Broker {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("benches/kafka/kafka.sh");
        let java_ok = Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            java_ok,
            "this test runs Apache Kafka as the reference: install a JDK 17+ (e.g. the \
             openjdk-17-jdk package) so that `java` is on PATH"
        );
        let has_jars = std::fs::read_dir(root.join("benches/kafka/lib")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        });
        assert!(
            has_jars,
            "this test runs Apache Kafka as the reference: fetch its jars first with \
             `bash benches/kafka/kafka.sh fetch` (needs Maven)"
        );
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-kafka-")
            .tempdir()
            .expect("create temp dir");
        let (port, _) = free_port_pair();
        let broker = Broker {
            backend: Backend::KafkaSh { script },
            opts: BrokerOpts::default(),
            dir: Some(dir),
            port,
            admin_port: 0,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        broker.launch();
        broker
    }

    /// Starts a `sluice` without waiting for it to answer (a cluster's brokers wait for
    /// each other before they serve); `wait_ready` waits.
    pub fn spawn_with(opts: BrokerOpts) -> Broker {
        let broker = Broker::local(
            Backend::Sluice {
                child: Mutex::new(None),
            },
            opts,
        );
        broker.spawn();
        broker
    }

    /// A broker this harness runs, in a fresh temporary directory on free ports.
    fn local(backend: Backend, opts: BrokerOpts) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("create temp dir");
        let (port, admin_port) = free_port_pair();
        Broker {
            backend,
            opts,
            dir: Some(dir),
            port,
            admin_port,
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    pub fn start_with(opts: BrokerOpts) -> Broker {
        if let Ok(bootstrap) = std::env::var("SLUICE_BOOTSTRAP") {
            let bootstrap = bootstrap.trim().to_string();
            assert!(!bootstrap.is_empty(), "SLUICE_BOOTSTRAP is empty");
            let broker = Broker {
                backend: Backend::External,
                opts,
                dir: None,
                port: 0,
                admin_port: 0,
                bootstrap,
            };
            broker.wait_ready();
            return broker;
        }
        let backend = match std::env::var_os("SLUICE_TEST_KAFKA_SH") {
            Some(script) if !script.is_empty() => Backend::KafkaSh {
                script: PathBuf::from(script),
            },
            _ => Backend::Sluice {
                child: Mutex::new(None),
            },
        };
        let broker = Broker::local(backend, opts);
        broker.launch();
        broker
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The socket address of the Kafka listener (the first, for a `SLUICE_BOOTSTRAP` list).
    pub fn addr(&self) -> SocketAddr {
        let first = self.bootstrap.split(',').next().unwrap_or_default();
        first
            .to_socket_addrs()
            .expect("resolve bootstrap")
            .next()
            .expect("bootstrap resolves to an address")
    }

    /// The admin listener port (0 for an external broker or Kafka).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// True when the harness did not start the broker and so cannot kill or restart it.
    pub fn is_external(&self) -> bool {
        matches!(self.backend, Backend::External)
    }

    /// True when the broker under test is Apache Kafka (`SLUICE_TEST_KAFKA_SH`).
    pub fn is_reference_kafka(&self) -> bool {
        matches!(self.backend, Backend::KafkaSh { .. })
    }

    /// True when the broker under test is this crate's `sluice` binary.
    pub fn is_sluice(&self) -> bool {
        matches!(self.backend, Backend::Sluice { .. })
    }

    fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("an external broker (SLUICE_BOOTSTRAP) has no local directory")
            .path()
    }

    /// The broker's data directory (`--data-dir`; for Kafka, its `log.dirs`).
    pub fn data_dir(&self) -> PathBuf {
        match self.backend {
            Backend::KafkaSh { .. } => self.root().join("kafka").join("logs"),
            _ => self.root().join("data"),
        }
    }

    /// Where the broker's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        match self.backend {
            Backend::KafkaSh { .. } => self.root().join("kafka").join("kafka.log"),
            _ => self.root().join("broker.log"),
        }
    }

    /// The last `lines` lines of the broker's output.
    pub fn log_tail(&self, lines: usize) -> String {
        if self.dir.is_none() {
            return String::from("(external broker: no log)");
        }
        let mut out = match std::fs::read(self.log_path()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => return format!("(no broker log: {e})"),
        };
        if matches!(self.backend, Backend::KafkaSh { .. }) {
            // kafka.sh truncates kafka.log on every start; keep earlier runs readable too.
            if let Ok(b) = std::fs::read(self.root().join("kafka-earlier.log")) {
                out = String::from_utf8_lossy(&b).into_owned() + &out;
            }
        }
        let all: Vec<&str> = out.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn launch(&self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&self) {
        match &self.backend {
            Backend::External => unreachable!(),
            Backend::Sluice { child } => {
                let data = self.data_dir();
                std::fs::create_dir_all(&data).expect("create data dir");
                let log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .expect("open broker log");
                let log2 = log.try_clone().expect("dup broker log");
                let listen = format!("127.0.0.1:{}", self.port);
                let admin = format!("127.0.0.1:{}", self.admin_port);
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
                cmd.arg("start")
                    .arg("--listen")
                    .arg(&listen)
                    .arg("--advertised-listener")
                    .arg(&listen)
                    .arg("--admin-listen")
                    .arg(&admin)
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("--cores")
                    .arg(self.opts.cores.to_string())
                    .args(&self.opts.extra_args)
                    .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(log2));
                if std::env::var_os("RUST_BACKTRACE").is_none() {
                    cmd.env("RUST_BACKTRACE", "1");
                }
                set_parent_death_signal(&mut cmd);
                if let Some(n) = self.opts.nofile {
                    set_nofile_limit(&mut cmd, n);
                }
                let c = cmd.spawn().expect("spawn sluice");
                *child.lock().unwrap() = Some(c);
            }
            Backend::KafkaSh { script } => {
                let kdir = self.root().join("kafka");
                // Keep the previous run's log: kafka.sh overwrites kafka.log.
                if let Ok(prev) = std::fs::read(kdir.join("kafka.log")) {
                    let mut f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.root().join("kafka-earlier.log"))
                        .expect("open kafka-earlier.log");
                    let _ = f.write_all(&prev);
                }
                let out = Command::new("bash")
                    .arg(script)
                    .arg("start")
                    .arg("--port")
                    .arg(self.port.to_string())
                    .arg("--data-dir")
                    .arg(&kdir)
                    .stdin(Stdio::null())
                    .output()
                    .expect("run kafka.sh start");
                assert!(
                    out.status.success(),
                    "kafka.sh start failed:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Waits (at most `START_TIMEOUT`) until the broker answers ApiVersions.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr();
        let mut last_err = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                panic!(
                    "broker exited during startup ({status}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            match api_versions_probe(addr, Duration::from_secs(2)) {
                Ok(()) => return,
                Err(e) => last_err = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "broker at {addr} did not answer ApiVersions within {START_TIMEOUT:?} (last error: \
             {last_err}); log tail:\n{}",
            self.log_tail(60)
        );
    }

    /// `Some(status)` if the `sluice` child has exited (reaping it).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match &self.backend {
            Backend::Sluice { child } => {
                let mut g = child.lock().unwrap();
                match g.as_mut() {
                    Some(c) => c.try_wait().expect("try_wait"),
                    None => None,
                }
            }
            _ => None,
        }
    }

    /// Process id of the `sluice` child, while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Sluice { child } => child.lock().unwrap().as_ref().map(|c| c.id()),
            _ => None,
        }
    }

    /// True while the broker process runs (always true for an external broker).
    pub fn is_alive(&self) -> bool {
        match &self.backend {
            Backend::External => true,
            Backend::Sluice { child } => {
                let mut g = child.lock().unwrap();
                match g.as_mut() {
                    Some(c) => c.try_wait().expect("try_wait").is_none(),
                    None => false,
                }
            }
            Backend::KafkaSh { .. } => self.kafka_pid().map(pid_alive).unwrap_or(false),
        }
    }

    /// Panics with the log tail if the broker process has gone.
    pub fn assert_alive(&self) {
        if !self.is_alive() {
            panic!(
                "broker process is gone ({:?}); log tail:\n{}",
                self.exit_status(),
                self.log_tail(80)
            );
        }
    }

    fn kafka_pid(&self) -> Option<i32> {
        let s = std::fs::read_to_string(self.root().join("kafka").join("kafka.pid")).ok()?;
        s.trim().parse().ok()
    }

    /// The JVM is not our child: whoever reaps it may be slow, and kafka.sh refuses to start
    /// while the pid in kafka.pid (even a zombie) exists.
    /// Also waits until nothing accepts on the port any more: a zombie thread-group leader
    /// can show while other JVM threads still hold the sockets.
    fn forget_kafka_pid(&self) {
        let _ = std::fs::remove_file(self.root().join("kafka").join("kafka.pid"));
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline
            && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn require_lifecycle(&self, what: &str) {
        assert!(
            !self.is_external(),
            "{what} needs a broker started by the harness (unset SLUICE_BOOTSTRAP)"
        );
    }

    /// `kill -9` the broker and wait for it to be gone. May be called from any thread.
    pub fn kill9(&self) {
        self.require_lifecycle("kill9");
        match &self.backend {
            Backend::Sluice { child } => {
                let mut g = child.lock().unwrap();
                if let Some(c) = g.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Backend::KafkaSh { .. } => {
                if let Some(pid) = self.kafka_pid() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    wait_pid_gone(pid, STOP_TIMEOUT);
                    self.forget_kafka_pid();
                }
            }
            Backend::External => unreachable!(),
        }
    }

    /// Sends SIGTERM and waits (at most `STOP_TIMEOUT`) for the broker to exit. Returns the
    /// exit status of a `sluice` child (`None` for Kafka, whose JVM is not our child).
    /// May be called from any thread. Panics if the broker does not stop in time.
    pub fn sigterm_and_wait(&self) -> Option<ExitStatus> {
        self.require_lifecycle("sigterm_and_wait");
        match &self.backend {
            Backend::Sluice { child } => {
                let mut g = child.lock().unwrap();
                let c = g.as_mut().expect("broker not running");
                if let Some(st) = c.try_wait().expect("try_wait") {
                    return Some(st);
                }
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + STOP_TIMEOUT;
                loop {
                    if let Some(st) = c.try_wait().expect("try_wait") {
                        return Some(st);
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        drop(g);
                        panic!(
                            "broker did not stop within {STOP_TIMEOUT:?} of SIGTERM; log tail:\n{}",
                            self.log_tail(60)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Backend::KafkaSh { .. } => {
                if let Some(pid) = self.kafka_pid() {
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    assert!(
                        wait_pid_gone(pid, STOP_TIMEOUT),
                        "Kafka did not stop within {STOP_TIMEOUT:?} of SIGTERM"
                    );
                    self.forget_kafka_pid();
                }
                None
            }
            Backend::External => unreachable!(),
        }
    }

    /// Starts the broker again on the same data dir and ports (killing it first if it still
    /// runs) and waits until it answers. Call from the thread that owns the `Broker`.
    pub fn restart(&self) {
        self.require_lifecycle("restart");
        if self.is_alive() {
            self.kill9();
        }
        self.launch();
    }

    /// Starts a stopped broker again on the same data dir and ports without waiting for it
    /// to answer (a whole cluster restarting waits for a quorum first).
    pub fn respawn(&self) {
        self.require_lifecycle("respawn");
        if self.is_alive() {
            self.kill9();
        }
        self.spawn();
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the `sluice` child.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().expect("the broker runs");
        unsafe { libc::kill(pid as i32, signal) };
    }

    fn kill_quietly(&self) {
        match &self.backend {
            Backend::Sluice { child } => {
                if let Ok(mut g) = child.lock() {
                    if let Some(c) = g.as_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
            Backend::KafkaSh { .. } => {
                if let Some(pid) = self.kafka_pid() {
                    if pid_alive(pid) {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        wait_pid_gone(pid, Duration::from_secs(10));
                    }
                }
            }
            Backend::External => {}
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() && self.dir.is_some() {
            eprintln!(
                "---- broker log tail ({}) ----\n{}\n---- end of broker log ----",
                self.log_path().display(),
                self.log_tail(80)
            );
        }
        self.kill_quietly();
        if std::env::var_os("SLUICE_TEST_KEEP_DIR").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping broker dir {}", d.keep().display());
            }
        }
    }
}

fn set_nofile_limit(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may already have gone between fork and prctl.
            if libc::getppid() == 1 {
                return Err(io::Error::other(
                    "test process exited before the broker started",
                ));
            }
            Ok(())
        });
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at /proc for its state.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Two distinct free loopback ports, chosen by the kernel, and never handed out before in
/// this test process. The kernel may give a port again once it is free (between two tests'
/// picks, or while a killed broker is down before its restart on the same ports), and the
/// broker listens with SO_REUSEPORT (one socket per shard), so a second broker would bind it
/// too and take half of the first one's connections.
pub fn free_port_pair() -> (u16, u16) {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Rejected picks stay bound until both are found, so the kernel offers other ports.
    let mut held = Vec::new();
    let mut fresh = || loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        held.push(l);
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    };
    let a = fresh();
    let b = fresh();
    (a, b)
}

/// Runs `f` on its own thread and panics if it takes longer than `limit`. On timeout the
/// thread is abandoned; a `Broker` it started dies with it at process exit at the latest.
pub fn run_bounded<F>(name: &str, limit: Duration, f: F)
where
    F: FnOnce() + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(());
            if let Err(p) = r {
                std::panic::resume_unwind(p);
            }
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: did not finish within {limit:?}");
        }
    }
}

/// A name unique within this machine and run.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ------------------------------------------------------------------ rdkafka helpers

/// Settings every test client shares.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-tests")
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "20000")
        .set("topic.metadata.refresh.interval.ms", "2000");
    c
}

/// An idempotent, acks=all producer configuration.
pub fn idempotent_producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "20000");
    c
}

/// A plain (acks=all) producer configuration.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    c
}

/// Consumer configuration for `assign`-style reading. librdkafka wants a `group.id` even
/// then; auto commit is off so no group state is written.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("group.id", unique_name("sluice-tests-group"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    consumer_config(bootstrap)
        .create()
        .expect("create consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap)
        .create()
        .expect("create admin client")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(CALL_TIMEOUT))
        .operation_timeout(Some(CALL_TIMEOUT))
}

/// Drives an rdkafka future (admin calls) to completion; rdkafka resolves them from its
/// own threads, and the admin options bound how long that takes.
pub fn block_on<F: Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// `n` records without a producer (keys `key-i`, values padded to `value_len`).
pub fn records(n: usize, value_len: usize) -> Vec<kafka_protocol::records::Record> {
    let ts = now_ms();
    (0..n)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence changes, and
            // writes base sequence = first sequence: this keeps one batch with base
            // sequence -1 (no idempotence).
            sequence: i as i32 - 1,
            timestamp: ts,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from({
                let mut v = format!("raw-value-{i}-").into_bytes();
                v.resize(value_len.max(v.len()), b'v');
                v
            })),
            headers: kafka_protocol::indexmap::IndexMap::new(),
        })
        .collect()
}

/// `recs` as one uncompressed RecordBatch v2.
pub fn encode_batch(recs: &[kafka_protocol::records::Record]) -> Bytes {
    let mut buf = BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// An acks=all Produce of one batch per partition of `topic`, 10 s timeout.
pub fn produce_request(
    topic: &str,
    parts: Vec<(i32, Bytes)>,
) -> kafka_protocol::messages::ProduceRequest {
    kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(
            vec![kafka_protocol::messages::produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(
                parts
                    .into_iter()
                    .map(|(p, b)| {
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(b))
                    })
                    .collect(),
            )],
        )
}

/// GET `path` from the admin listener on `port`: the status line and the body.
pub fn admin_get(port: u16, path: &str) -> io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    // One write: the request head arrives whole, as a scraper sends it.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no HTTP head in {resp:?}")))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// Creates a topic (replication factor 1) and waits until its partitions have leaders.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let replicas = match std::env::var("SLUICE_TEST_REPLICATION_FACTOR") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SLUICE_TEST_REPLICATION_FACTOR={v:?} is not a number")),
        Err(_) => 1,
    };
    create_topic_rf(bootstrap, name, partitions, replicas, configs)
}

/// Creates a topic with `replicas` replicas per partition and waits until its partitions
/// have leaders.
pub fn create_topic_rf(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    let admin = admin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(admin.create_topics([&t], &admin_opts())).expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(n, e)| panic!("create topic {n}: {e:?}"));
    }
    wait_topic_ready(bootstrap, name, partitions);
}

/// Waits until metadata lists `name` with `partitions` partitions, each with a leader.
pub fn wait_topic_ready(bootstrap: &str, name: &str, partitions: i32) {
    let c = consumer(bootstrap);
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match c.fetch_metadata(Some(name), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                    let ready = t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none());
                    if ready {
                        return;
                    }
                    last = format!(
                        "error {:?}, {} partitions, leaders {:?}",
                        t.error(),
                        t.partitions().len(),
                        t.partitions()
                            .iter()
                            .map(|p| p.leader())
                            .collect::<Vec<_>>()
                    );
                } else {
                    last = "topic not listed".into();
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {name} not ready with {partitions} partitions: {last}");
}

/// Names of all topics in the cluster metadata.
pub fn topic_names(bootstrap: &str) -> Vec<String> {
    let c = consumer(bootstrap);
    let md = c
        .fetch_metadata(None, CALL_TIMEOUT)
        .expect("fetch_metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// What a producer's delivery report said about one message.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The `usize` delivery opaque given at send time (the test's message index).
    pub id: usize,
    pub partition: i32,
    /// Offset on success; the error otherwise.
    pub result: Result<i64, KafkaError>,
    /// When the report arrived.
    pub at: Instant,
}

/// A producer context that records every delivery report.
#[derive(Clone, Default)]
pub struct DeliveryLog {
    pub reports: Arc<Mutex<Vec<Delivery>>>,
    pub acked: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl DeliveryLog {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    pub fn settled(&self) -> u64 {
        self.acked() + self.failed()
    }
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.reports.lock().unwrap().clone()
    }
}

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, id: usize) {
        let d = match r {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::SeqCst);
                Delivery {
                    id,
                    partition: m.partition(),
                    result: Ok(m.offset()),
                    at: Instant::now(),
                }
            }
            Err((e, m)) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                Delivery {
                    id,
                    partition: m.partition(),
                    result: Err(e.clone()),
                    at: Instant::now(),
                }
            }
        };
        self.reports.lock().unwrap().push(d);
    }
}

pub type LoggedProducer = ThreadedProducer<DeliveryLog>;

pub fn logged_producer(config: &ClientConfig) -> (LoggedProducer, DeliveryLog) {
    let log = DeliveryLog::default();
    let p = config
        .create_with_context(log.clone())
        .expect("create producer");
    (p, log)
}

/// Sends a record, waiting (bounded) while the local queue is full.
pub fn send_retrying(
    producer: &LoggedProducer,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
    deadline: Instant,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                assert!(Instant::now() < deadline, "producer queue stayed full");
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => panic!("send failed: {e:?}"),
        }
    }
}

/// (low, high) watermarks of one partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let c = consumer(bootstrap);
    c.fetch_watermarks(topic, partition, CALL_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_watermarks {topic}/{partition}: {e:?}"))
}

/// Reads every partition of `topic` from `start` offsets (Beginning if absent) up to the
/// high watermark as it is when called. Panics if that takes longer than `timeout`.
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> HashMap<i32, Vec<OwnedMessage>> {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for p in 0..partitions {
        let (_, h) = c
            .fetch_watermarks(topic, p, CALL_TIMEOUT)
            .expect("fetch_watermarks");
        high.insert(p, h);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut out: HashMap<i32, Vec<OwnedMessage>> =
        (0..partitions).map(|p| (p, Vec::new())).collect();
    let done = |out: &HashMap<i32, Vec<OwnedMessage>>| {
        (0..partitions).all(|p| {
            let h = high[&p];
            h == 0 || out[&p].last().map(|m| m.offset() + 1 >= h).unwrap_or(false)
        })
    };
    let deadline = Instant::now() + timeout;
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "read_to_end {topic}: timed out; high watermarks {high:?}, read {:?}",
            out.iter()
                .map(|(p, v)| (*p, v.len()))
                .collect::<HashMap<_, _>>()
        );
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.get_mut(&m.partition()).unwrap().push(m.detach()),
            Some(Err(e)) => panic!("consumer error: {e:?}"),
        }
    }
    out
}

/// `read_to_end` again until `done` holds for what it read (a cluster that just lost a
/// leader answers NOT_LEADER for a while, and a stale leader may report an older high
/// watermark); panics past `timeout`.
pub fn read_until(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    done: impl Fn(&HashMap<i32, Vec<OwnedMessage>>) -> bool,
) -> HashMap<i32, Vec<OwnedMessage>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = std::panic::catch_unwind(|| read_to_end(bootstrap, topic, partitions, left));
        match read {
            Ok(r) if done(&r) => return r,
            Ok(r) => assert!(
                Instant::now() < deadline,
                "{topic}: read {} records, not what was expected",
                r.values().map(Vec::len).sum::<usize>()
            ),
            Err(_) => assert!(Instant::now() < deadline, "{topic}: reading kept failing"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Proves the broker serves a real client: produce one message with rdkafka (acks=all) to
/// `topic` partition 0 and read it back at the acknowledged offset.
pub fn rdkafka_round_trip(bootstrap: &str, topic: &str) {
    let (p, log) = logged_producer(&producer_config(bootstrap));
    let payload = unique_name("ping").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    send_retrying(
        &p,
        BaseRecord::with_opaque_to(topic, 0)
            .partition(0)
            .payload(&payload[..])
            .key(&b"k"[..]),
        deadline,
    );
    p.flush(Duration::from_secs(30)).expect("flush");
    let reports = log.snapshot();
    assert_eq!(reports.len(), 1);
    let off = match &reports[0].result {
        Ok(o) => *o,
        Err(e) => panic!("round-trip produce failed: {e:?}"),
    };
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(off))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "round-trip consume timed out");
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                assert_eq!(m.offset(), off);
                assert_eq!(m.payload(), Some(&payload[..]));
                return;
            }
            Some(Err(e)) => panic!("round-trip consume error: {e:?}"),
        }
    }
}

// ------------------------------------------------------------------ raw protocol

/// Connects with a timeout and sets read/write timeouts.
pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Builds a length-prefixed request frame for `req` at `version`.
pub fn request_frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-raw-test")));
    let mut body = BytesMut::new();
    encode_request_header_into_buffer(&mut body, &header).expect("encode header");
    req.encode(&mut body, version).expect("encode request");
    frame(&body)
}

/// Builds a frame from a header of the given header version (api key and version taken
/// as they are, even if unknown) and an already encoded body.
pub fn raw_request_frame(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    header_version: i16,
    body: &[u8],
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-raw-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, header_version)
        .expect("encode header");
    buf.extend_from_slice(body);
    frame(&buf)
}

/// Prefixes `payload` with its i32 length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 4);
    v.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Reads one length-prefixed frame (at most 64 MiB).
pub fn read_frame(s: &mut TcpStream) -> io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=64 << 20).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Decodes a response frame: (correlation id, body).
pub fn decode_response<Resp: Decodable + HeaderVersion>(frame: Bytes, version: i16) -> (i32, Resp) {
    let mut buf = frame;
    let header = ResponseHeader::decode(&mut buf, Resp::header_version(version))
        .expect("decode response header");
    let body = Resp::decode(&mut buf, version).expect("decode response body");
    (header.correlation_id, body)
}

/// Sends `req` on `s` and decodes the answer, checking the correlation id.
pub fn send_request<R: Request>(s: &mut TcpStream, req: &R, version: i16) -> R::Response {
    static CORR: AtomicU64 = AtomicU64::new(1);
    let corr = (CORR.fetch_add(1, Ordering::Relaxed) % i32::MAX as u64) as i32;
    s.write_all(&request_frame(req, version, corr))
        .expect("write request");
    let f = read_frame(s).expect("read response");
    let (c, resp) = decode_response::<R::Response>(f, version);
    assert_eq!(c, corr, "correlation id");
    resp
}

/// A valid ApiVersions v3 request.
pub fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"))
}

/// Opens a connection, sends ApiVersions v0 and checks for a well-formed, error-free answer.
pub fn api_versions_probe(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut s = connect(addr, timeout)?;
    s.write_all(&request_frame(&api_versions_request(), 0, 7))?;
    let f = read_frame(&mut s)?;
    let mut buf = f;
    let h = ResponseHeader::decode(&mut buf, 0).map_err(|e| io::Error::other(e.to_string()))?;
    let r =
        ApiVersionsResponse::decode(&mut buf, 0).map_err(|e| io::Error::other(e.to_string()))?;
    if h.correlation_id != 7 || r.error_code != 0 || r.api_keys.is_empty() {
        return Err(io::Error::other(format!(
            "bad ApiVersions answer: corr {} error {} {} apis",
            h.correlation_id,
            r.error_code,
            r.api_keys.len()
        )));
    }
    Ok(())
}

/// Proves the broker serves valid requests over a raw socket: ApiVersions v3.
pub fn assert_api_versions_ok(addr: SocketAddr) {
    let mut s = connect(addr, Duration::from_secs(10)).expect("connect");
    let r: ApiVersionsResponse = send_request(&mut s, &api_versions_request(), 3);
    assert_eq!(r.error_code, 0, "ApiVersions v3 error");
    assert!(
        r.api_keys.iter().any(|k| k.api_key == 0),
        "ApiVersions lists Produce"
    );
    assert!(
        r.api_keys.iter().any(|k| k.api_key == 18),
        "ApiVersions lists ApiVersions"
    );
}

/// How a connection ended after bad input.
#[derive(Debug)]
pub struct Closed {
    /// Bytes the broker sent before closing.
    pub bytes_before_close: usize,
    /// How long the close took.
    pub after: Duration,
}

/// Waits for the peer to close `s` (EOF or reset), reading and discarding whatever it sends
/// first. `Err` if it is still open after `timeout`.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Result<Closed, String> {
    let start = Instant::now();
    let mut n = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {timeout:?} ({n} bytes received)"
            ));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return Ok(Closed {
                    bytes_before_close: n,
                    after: start.elapsed(),
                })
            }
            Ok(k) => n += k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                return Ok(Closed {
                    bytes_before_close: n,
                    after: start.elapsed(),
                })
            }
        }
    }
}

/// Writes `bytes`, tolerating the broker closing the connection part way.
pub fn write_tolerant(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// Half-closes the write side (to show the broker no more is coming).
pub fn shutdown_write(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

/// Open file count of this process (for diagnostics).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// An OffsetCommit of `offset` for partition 0 of `topic`, outside any generation (a
/// simple consumer group).
pub fn commit_request(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    r
}

/// The committed offset of `group` for partition 0 of `topic`, via OffsetFetch v7.
pub fn fetched_offset(s: &mut std::net::TcpStream, group: &str, topic: &str) -> i64 {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.topics = Some(vec![t]);
    let resp = send_request(s, &r, 7);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
}
