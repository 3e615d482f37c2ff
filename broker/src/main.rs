//! `sluice`: a Kafka-compatible broker. One pinned glommio executor (shard) per core; each
//! accepts on the Kafka port, owns a subset of partitions, and forwards work for others'
//! partitions to their owner. See ARCHITECTURE.md.
//!
//! The broker crate must never reach into storage internals or Raft internals: it speaks to
//! `sluice-storage` through `PartitionLog`, and to the wire through `sluice-protocol`.

mod admin_http;
mod cleaner;
mod cli;
mod config;
mod conn;
mod controller;
mod groups;
mod handlers;
mod metadata;
mod partition;
mod preflight;
mod shard;
mod telemetry;
mod topics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use config::{Config, SHARD_QUEUE_DEPTH, SHUTDOWN_GRACE_MS};
use shard::{Job, Shard};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible streaming broker (thread-per-core, direct I/O)"
)]
struct Cli {
    #[command(flatten)]
    client: cli::ClientArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker (the default with no arguments: one node on 127.0.0.1:9092).
    Start(StartArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Args, Default)]
struct StartArgs {
    /// TOML config file; flags override it, and it overrides the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where partition logs and cluster metadata live [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HOST:PORT given to clients in Metadata [default: the listen address].
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Inter-broker RPC listener (Raft traffic) [default: off].
    #[arg(long)]
    rpc_listen: Option<SocketAddr>,
    /// HOST:PORT peer brokers are told to connect to for RPC [default: the RPC listen address].
    #[arg(long)]
    advertised_rpc_listener: Option<String>,
    /// RPC addresses of the initial voters, comma-separated, the same on every initial broker.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// HTTP address for /metrics, /health and /ready [default: off].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Shards, one per core [default: all cores].
    #[arg(long)]
    cores: Option<usize>,
    /// This broker's node id [default: 1].
    #[arg(long)]
    node_id: Option<i32>,
}

/// Control messages from the main thread to a shard.
enum Control {
    /// Stop accepting, let in-flight requests finish, then answer on the channel.
    Drain(flume::Sender<()>),
    /// Flush and close every partition, then stop the executor.
    Close,
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Client(c)) => std::process::exit(cli::run(cli.client, c)),
        Some(Command::Start(a)) => a,
        None => StartArgs::default(),
    };
    if cli.client.brokers.is_some() || cli.client.format.is_some() {
        eprintln!("sluice: --brokers and --format are for the topic, group and cluster commands");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .init();
    let config = match load_config(args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("sluice: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(config));
}

fn load_config(args: StartArgs) -> Result<Config, config::ConfigError> {
    let mut c = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(v) = args.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.advertised_listener {
        c.advertised_listener = Some(v);
    }
    if let Some(v) = args.rpc_listen {
        c.rpc_listen = Some(v);
    }
    if let Some(v) = args.advertised_rpc_listener {
        c.advertised_rpc_listener = Some(v);
    }
    if let Some(v) = args.seeds {
        c.seeds = v;
    }
    if let Some(v) = args.admin_listen {
        c.admin_listen = Some(v);
    }
    if let Some(v) = args.cores {
        c.cores = Some(v);
    }
    if let Some(v) = args.node_id {
        c.node_id = v;
    }
    c.validate()?;
    // Storage opens directories by absolute path; resolve `./sluice-data` once, here.
    c.data_dir = std::path::absolute(&c.data_dir).map_err(|e| {
        config::ConfigError::Invalid(format!("data dir {}: {e}", c.data_dir.display()))
    })?;
    Ok(c)
}

fn block_shutdown_signals() -> libc::sigset_t {
    // Blocked before shard threads start, so they inherit the mask and only the main
    // thread receives SIGTERM/SIGINT, through sigwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, preflight::SHARD_EXITED);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn run(config: Arc<Config>) -> i32 {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = config.cores.unwrap_or(available);
    if cores > available {
        eprintln!("sluice: --cores {cores} is more than the {available} cores this machine has");
        return 2;
    }
    // Before any executor: a container that blocks io_uring gets a diagnostic naming the
    // cause, not glommio's panic on a shard thread.
    if let Err(e) = preflight::check() {
        eprintln!("sluice: {e}");
        return 1;
    }
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        eprintln!(
            "sluice: cannot create data dir {}: {e}",
            config.data_dir.display()
        );
        return 1;
    }
    // Held until the process exits; the kernel releases it even after kill -9.
    let _lock = match lock_data_dir(&config.data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sluice: {e}");
            return 1;
        }
    };
    let mut listeners = vec![("listen", config.listen)];
    listeners.extend(config.rpc_listen.map(|a| ("rpc.listen", a)));
    listeners.extend(config.admin_listen.map(|a| ("admin.listen", a)));
    if let Err(e) = preflight::check_ports_free(&listeners) {
        eprintln!("sluice: {e}");
        return 1;
    }
    // Before any shard starts, so the handles shards resolve are real ones. Without an
    // admin port nobody can scrape, so every handle stays a no-op and costs nothing.
    if config.admin_listen.is_some() {
        if let Err(e) = telemetry::install() {
            eprintln!("sluice: cannot install the metrics recorder: {e}");
            return 1;
        }
    }
    let open_files_max = descriptor_budget(&config, cores);
    let signals = block_shutdown_signals();
    let (job_txs, job_rxs): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| flume::bounded::<Job>(SHARD_QUEUE_DEPTH))
        .unzip();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    // Pinned to the CPUs we are allowed, which in a container need not start at 0.
    let cpus = preflight::allowed_cpus();
    for (id, jobs) in job_rxs.into_iter().enumerate() {
        let (ctl_tx, ctl_rx) = flume::unbounded::<Control>();
        controls.push(ctl_tx);
        let config = config.clone();
        let peers = job_txs.clone();
        // Signals the main thread however this shard's thread ends (see ShardExitGuard).
        let exit_guard = preflight::ShardExitGuard(id);
        let cpu = cpus.get(id).copied().unwrap_or(id);
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .spawn(move || {
                let exit_guard = exit_guard;
                sluice_storage::set_open_files_max(open_files_max);
                async move {
                    let _exit_guard = exit_guard;
                    shard_main(id, config, peers, jobs, ctl_rx).await
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!(
                    "sluice: cannot start shard {id} (an io_uring executor): {e}\n\
                     io_uring must be allowed: containers need a seccomp profile that permits \
                     io_uring_setup/io_uring_enter/io_uring_register, and the memlock limit \
                     (ulimit -l) must be at least {} KiB.",
                    preflight::MIN_MEMLOCK_BYTES / 1024
                );
                return 1;
            }
        }
    }
    drop(job_txs);

    let mut sig: libc::c_int = 0;
    unsafe { libc::sigwait(&signals, &mut sig) };
    let mut code = 0;
    if sig == preflight::SHARD_EXITED {
        let shard = preflight::first_shard_exited().unwrap_or(0);
        error!(
            shard,
            "a shard stopped unexpectedly (see above); stopping the broker"
        );
        code = 1;
        preflight::exit_after(Duration::from_millis(4 * SHUTDOWN_GRACE_MS));
    }
    info!(signal = sig, "shutting down: draining in-flight requests");
    let (drained_tx, drained_rx) = flume::unbounded();
    // A shard whose thread is gone has dropped its receiver: wait only for the others.
    let asked = controls
        .iter()
        .filter(|c| c.send(Control::Drain(drained_tx.clone())).is_ok())
        .count();
    for _ in 0..asked {
        let _ = drained_rx.recv_timeout(Duration::from_millis(2 * SHUTDOWN_GRACE_MS));
    }
    for c in &controls {
        let _ = c.send(Control::Close);
    }
    for t in threads {
        if t.join().is_err() {
            code = 1;
        }
    }
    info!("stopped");
    code
}

/// Name of the lock file in the data directory (Kafka's is `.lock` too).
const LOCK_FILE: &str = ".lock";
/// Share of the descriptor limit the shards' open-file caches may use together; the rest is
/// for sockets, io_uring rings and short-lived opens (index files, directories, checkpoints).
const FILE_CACHE_SHARE_OF_NOFILE: u64 = 4;

/// Takes an exclusive `flock` on `<data>/.lock` and writes our pid into it, so a second
/// broker on the same directory refuses to start instead of serving the same files.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("another sluice (pid {holder})")
            };
            return Err(format!(
                "data dir {} is in use by {who}; one broker per data directory",
                dir.display()
            ));
        }
        return Err(format!("cannot lock {}: {err}", path.display()));
    }
    let pid = std::process::id().to_string();
    let written = f
        .set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(pid.as_bytes()));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "could not record our pid in the lock file");
    }
    Ok(f)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and returns each shard's open-file
/// cache size: `log.open.files.max`, lowered if the shards' caches would not fit in a share
/// of the limit.
fn descriptor_budget(config: &Config, shards: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    let nofile = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            warn!("cannot read RLIMIT_NOFILE; keeping log.open.files.max as configured");
            return config.log_open_files_max;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = before;
            }
        }
        info!(
            soft_before = before,
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "open file limit (RLIMIT_NOFILE)"
        );
        lim.rlim_cur
    };
    let fits = (nofile / FILE_CACHE_SHARE_OF_NOFILE / shards as u64) as usize;
    let max = config.log_open_files_max.min(fits.max(1));
    if max < config.log_open_files_max {
        warn!(
            configured = config.log_open_files_max,
            used = max,
            nofile,
            "log.open.files.max lowered to fit the descriptor limit"
        );
    }
    max
}

async fn shard_main(
    id: usize,
    config: Arc<Config>,
    peers: Vec<flume::Sender<Job>>,
    jobs: flume::Receiver<Job>,
    control: flume::Receiver<Control>,
) {
    {
        let shard = Shard::new(
            id,
            config.clone(),
            peers,
            Rc::new(handlers::version_table()),
        );
        glommio::spawn_local(shard.clone().serve_jobs(jobs)).detach();
        if id == 0 && !start_cluster(&shard).await {
            std::process::exit(1);
        }
        while let Ok(msg) = control.recv_async().await {
            match msg {
                Control::Drain(done) => {
                    shard.shutting_down.set(true);
                    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
                    while shard.inflight_bytes.available() < config.queued_max_request_bytes as u64
                        && Instant::now() < deadline
                    {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = done.send(());
                }
                Control::Close => break,
            }
        }
        shard.close_partitions().await;
    }
}

/// Shard 0: checks the data dir, replays metadata, has every shard open its partitions,
/// then starts every shard's listener. Returns false on a fatal start-up error.
async fn start_cluster(shard: &Rc<Shard>) -> bool {
    let config = shard.config.clone();
    if let Err(e) = sluice_storage::check_direct_io(&config.data_dir).await {
        error!(
            "direct I/O does not work in {}: {e}. Put the data dir on a file system with \
             O_DIRECT support (ext4, xfs; not tmpfs or overlayfs on some kernels).",
            config.data_dir.display()
        );
        return false;
    }
    // Peers reach the controller group through the RPC listener, so it listens first.
    if let Some(addr) = config.rpc_listen {
        match shard.start_rpc(addr) {
            Ok(bound) => info!(%bound, "inter-broker RPC listening"),
            Err(e) => {
                error!(%addr, error = %e, "cannot listen on the RPC address");
                return false;
            }
        }
    }
    // A broker not among the seeds joins the running cluster: a learner of the controller
    // group, admitted by its leader, then registered like any broker.
    let joining = !config.is_seed();
    let seeds = match controller::discover_seeds(shard, joining).await {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return false;
        }
    };
    shard.set_addresses(seeds.clone()).await;
    let mut voters: Vec<u64> = seeds.iter().map(|(n, _)| *n).collect();
    if !joining {
        voters.push(config.node_id as u64);
    }
    voters.sort_unstable();
    let legacy = match metadata::read_legacy(&config.data_dir, config.node_id).await {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot read the metadata log of an earlier build");
            return false;
        }
    };
    if legacy.is_some() && (joining || voters.len() > 1) {
        error!(
            "{} holds a one-node broker's metadata from an earlier build; start it alone \
             once (no other seeds) to migrate it, or use an empty data dir to join a cluster",
            config.data_dir.display()
        );
        return false;
    }
    // A broker with no controller log of its own starts empty: one decommissioned before
    // may join again as a new broker.
    let fresh = !config.data_dir.join(controller::CONTROLLER_DIR).exists();
    let c = match controller::Controller::open(shard, voters.clone()).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot open the controller log");
            return false;
        }
    };
    shard.set_controller(c.clone());
    if joining {
        if let Err(e) = c.join(shard, &seeds, fresh).await {
            error!("cannot join the cluster: {e}");
            return false;
        }
    }
    if !c.catch_up(STARTUP_WAIT).await {
        warn!("the controller log was not replayed in time; going on with what is applied");
    }
    if let Some(records) = legacy {
        if !migrate_legacy(shard, records).await {
            return false;
        }
    }
    shard.start_leader_notices();
    if !form_cluster(shard, &voters).await {
        return false;
    }
    c.start_heartbeats(shard);
    for target in 0..shard.count {
        shard
            .run_on(target, |s| async move { s.start_group_sweeper() })
            .await;
    }
    for target in 0..shard.count {
        let ok = shard
            .run_on(target, |s| async move { start_listener(&s) })
            .await;
        if !ok {
            return false;
        }
    }
    if let Some(addr) = config.admin_listen {
        if let Err(e) = admin_http::start(shard.clone(), addr) {
            error!(%addr, error = %e, "cannot listen on the admin address");
            return false;
        }
    }
    info!(listen = %config.listen, shards = shard.count, data_dir = %config.data_dir.display(), "sluice is ready");
    true
}

/// Log filter without `RUST_LOG`: openraft reports every heartbeat and vote at info.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";
/// How long start-up waits for the controller's log to be replayed.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// Pause between start-up steps that wait for the cluster (a quorum, the other seeds).
const FORMING_RETRY: Duration = Duration::from_millis(200);

/// Commits a one-node metadata log of an earlier build as the controller's first change,
/// then sets the old log aside.
async fn migrate_legacy(shard: &Rc<Shard>, records: Vec<metadata::MetaRecord>) -> bool {
    let n = records.len();
    let migrated = shard
        .update_metadata(move |img| {
            if img.version > 0 {
                return Ok::<_, ()>(Vec::new());
            }
            Ok(records.clone())
        })
        .await;
    if let Err(e) = migrated {
        error!(error = ?e, "cannot migrate the metadata log of an earlier build");
        return false;
    }
    let dir = shard.config.data_dir.join(metadata::LEGACY_METADATA_DIR);
    let aside = dir.with_extension("migrated");
    if let Err(e) = std::fs::rename(&dir, &aside) {
        error!(error = %e, "cannot set the migrated metadata log aside");
        return false;
    }
    info!(
        records = n,
        "metadata log of an earlier build migrated to the controller"
    );
    true
}

/// Makes sure the cluster has an id, this broker is registered with its current addresses,
/// and, once every seed has registered, that the consumer-offsets topic exists. Waits for a
/// controller quorum when one of these needs a change.
async fn form_cluster(shard: &Rc<Shard>, voters: &[u64]) -> bool {
    let config = shard.config.clone();
    let me = config.broker_info();
    let voters: Vec<i32> = voters.iter().map(|&v| v as i32).collect();
    let mut waits = 0u64;
    loop {
        if shard.shutting_down.get() {
            return false;
        }
        let me = me.clone();
        let joined = shard
            .update_metadata(move |img| {
                let mut records = Vec::new();
                if img.cluster_id.is_empty() {
                    // Kafka cluster ids are 22-character url-safe base64 of a UUID; any
                    // string works.
                    let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
                    records.push(metadata::MetaRecord::ClusterId(id));
                }
                if img.brokers.get(&me.id) != Some(&me) {
                    records.push(metadata::MetaRecord::BrokerRegistered(me.clone()));
                }
                Ok::<_, ()>(records)
            })
            .await;
        match joined {
            Ok(img) if voters.iter().all(|v| img.brokers.contains_key(v)) => break,
            Ok(_) => {}
            Err(e) => {
                if waits.is_multiple_of(25) {
                    info!(error = ?e, "waiting for a controller quorum");
                }
            }
        }
        waits += 1;
        glommio::timer::sleep(FORMING_RETRY).await;
    }
    // The consumer-group coordinator's internal topic, created once every initial broker
    // can hold a replica.
    let partitions = config.offsets_topic_num_partitions;
    let segment_bytes = config.offsets_topic_segment_bytes;
    let rf = config.offsets_topic_replication_factor;
    let created = shard
        .update_metadata(move |img| {
            if img.topic(groups::OFFSETS_TOPIC).is_some() {
                return Ok(Vec::new());
            }
            let configs = [
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), segment_bytes.to_string()),
            ]
            .into();
            // The broker's own topic is not held to the user-facing partition limit, and
            // takes as many replicas as there are brokers, up to its factor.
            let mut budget = topics::PartitionBudget::unlimited();
            let rf = rf.min(img.placeable().count().max(1) as i16);
            topics::plan_create(
                img,
                &mut budget,
                groups::OFFSETS_TOPIC,
                topics::Layout::Spread {
                    partitions,
                    replication_factor: rf,
                },
                configs,
            )
            .map(|r| vec![r])
        })
        .await;
    if let Err(e) = created {
        error!(error = ?e, "cannot create the consumer offsets topic");
        return false;
    }
    true
}

fn start_listener(shard: &Rc<Shard>) -> bool {
    let addr = shard.config.listen;
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            error!(%addr, error = %e, "cannot listen on the Kafka address");
            return false;
        }
    };
    shard.start_retention();
    cleaner::start(shard);
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            if s.shutting_down.get() {
                break;
            }
            match listener.accept().await {
                Ok(stream) => {
                    glommio::spawn_local(conn::serve(s.clone(), stream)).detach();
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .detach();
    true
}
