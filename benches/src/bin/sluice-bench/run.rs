//! One run of a workload against one target: create the topic, start the consumers at the
//! end of every partition, run the open-loop producers, drain, and collect the histograms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::stats::{intended_us, new_histogram, record, Clock, Window};
use crate::workload::{Keys, Workload};
use crate::BenchResult;

/// Bound on admin and metadata calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a run waits for every partition of its topic to have a leader (a broker just
/// resumed with SIGCONT, or restarted, may need a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What one run measured.
pub struct RunOutcome {
    pub window: Window,
    pub produce_ack: Histogram<u64>,
    pub end_to_end: Histogram<u64>,
    /// Messages handed to librdkafka (all, warm-up included).
    pub sent: u64,
    /// Messages the schedule called for but the producers never got to send.
    pub unsent: u64,
    /// Acks whose message was intended inside the window.
    pub acked_window: u64,
    /// Acks that arrived inside the window (the achieved rate's numerator).
    pub acked_during_window: u64,
    pub acked_total: u64,
    /// Messages intended inside the window that a consumer read.
    pub consumed_window: u64,
    pub consumed_total: u64,
    pub produce_errors: u64,
    pub consume_errors: u64,
    pub first_errors: Vec<String>,
    /// Payload bytes acked during the window.
    pub bytes_acked_during_window: u64,
    /// Most a producer's send ran behind its schedule, µs.
    pub max_send_lag_us: u64,
}

/// Error messages kept for the report (the first few of each run).
#[derive(Default)]
struct ErrorLog {
    first: Mutex<Vec<String>>,
}

impl ErrorLog {
    fn push(&self, e: String) {
        let mut v = self.first.lock().unwrap();
        if v.len() < 10 {
            v.push(e);
        }
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    c
}

/// Creates `topic` (one replica); an existing topic is fine. Then waits until every
/// partition has a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> BenchResult<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let opts = AdminOptions::new()
        .request_timeout(Some(CALL_TIMEOUT))
        .operation_timeout(Some(CALL_TIMEOUT));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in block_on(admin.create_topics([&new], &opts))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => return Err(format!("create topic {name}: {e}").into()),
        }
    }
    let probe: BaseConsumer = client_config(bootstrap).create()?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        let mut state = String::from("no metadata");
        match probe.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    let n = t.partitions().len();
                    if t.error().is_none()
                        && n > 0
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                    {
                        if n != partitions as usize {
                            eprintln!(
                                "warning: topic {topic} already exists with {n} partitions, \
                                 not {partitions}"
                            );
                        }
                        return Ok(());
                    }
                    state = format!("{n} partitions, error {:?}", t.error());
                }
            }
            Err(e) => state = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(format!("topic {topic} not ready after {CALL_TIMEOUT:?}: {state}").into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes `topic`; best effort, a failure is only reported.
pub fn delete_topic(bootstrap: &str, topic: &str) {
    let deleted = (|| -> BenchResult<()> {
        let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
        let opts = AdminOptions::new()
            .request_timeout(Some(CALL_TIMEOUT))
            .operation_timeout(Some(CALL_TIMEOUT));
        for r in block_on(admin.delete_topics(&[topic], &opts))? {
            r.map_err(|(name, e)| format!("delete topic {name}: {e}"))?;
        }
        Ok(())
    })();
    if let Err(e) = deleted {
        eprintln!("warning: could not delete topic {topic} on {bootstrap}: {e}");
    }
}

/// Shared by a producer's sending thread and its delivery callback (librdkafka's thread).
struct ProducerShared {
    clock: Clock,
    window: Window,
    hist: Mutex<Histogram<u64>>,
    acked_window: AtomicU64,
    acked_during_window: AtomicU64,
    acked_total: AtomicU64,
    bytes_acked_during_window: AtomicU64,
    errors: AtomicU64,
    error_log: Arc<ErrorLog>,
}

struct DeliveryCtx(Arc<ProducerShared>);

impl ClientContext for DeliveryCtx {}

impl ProducerContext for DeliveryCtx {
    /// The message's intended send time, µs.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: usize) {
        let s = &self.0;
        let now = s.clock.now_us();
        let intended = intended as u64;
        match result {
            Ok(msg) => {
                s.acked_total.fetch_add(1, Ordering::Relaxed);
                if s.window.contains(intended) {
                    s.acked_window.fetch_add(1, Ordering::Relaxed);
                    record(&mut s.hist.lock().unwrap(), intended, now);
                }
                if s.window.contains(now) {
                    s.acked_during_window.fetch_add(1, Ordering::Relaxed);
                    let len = msg.payload_len() as u64;
                    s.bytes_acked_during_window
                        .fetch_add(len, Ordering::Relaxed);
                }
            }
            Err((e, _)) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                s.error_log.push(format!("delivery: {e}"));
            }
        }
    }
}

/// A tiny xorshift generator: random keys and payload filler without another dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Writes back every dirty page of the machine (sync(2)) and says how long it took. A
/// broker that acknowledges from the page cache leaves its writes to the kernel's flusher;
/// without this they would compete for the disk in whichever run comes next.
pub fn settle(name: &str) {
    let t = Instant::now();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let took = t.elapsed();
    if took > Duration::from_millis(100) {
        eprintln!("[{name}] settle: sync(2) took {:.1} s", took.as_secs_f64());
    }
}

/// Every partition of `topic` with its high watermark, once all of them have a leader and
/// answer; a broker that was just resumed or restarted gets `READY_TIMEOUT` to get there.
fn partition_ends(probe: &BaseConsumer, topic: &str) -> BenchResult<Vec<(i32, i64)>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let attempt = || -> BenchResult<Vec<(i32, i64)>> {
            let md = probe.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| format!("topic {topic} is not in the metadata"))?;
            if t.partitions().is_empty() || t.partitions().iter().any(|p| p.leader() < 0) {
                return Err(format!("topic {topic} has partitions without a leader").into());
            }
            t.partitions()
                .iter()
                .map(|p| {
                    let (_, high) = probe.fetch_watermarks(topic, p.id(), CALL_TIMEOUT)?;
                    Ok((p.id(), high))
                })
                .collect()
        };
        match attempt() {
            Ok(ends) => return Ok(ends),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Runs `w` against `bootstrap` on `topic` (which must exist). `on_window` is called once
/// at the start and once at the end of the measured window (for the CPU sampling).
pub fn run(
    bootstrap: &str,
    topic: &str,
    w: &Workload,
    drain_timeout: Duration,
    on_window: &mut dyn FnMut(bool),
) -> BenchResult<RunOutcome> {
    let clock = Clock::new();
    let errors = Arc::new(ErrorLog::default());

    // Consumers first, each assigned its share of the partitions at the current end.
    let probe: BaseConsumer = client_config(bootstrap).create()?;
    let ends = partition_ends(&probe, topic)?;
    let mut shares: Vec<TopicPartitionList> = (0..w.consumers.min(ends.len()))
        .map(|_| TopicPartitionList::new())
        .collect();
    let n_shares = shares.len();
    for (i, (p, high)) in ends.iter().enumerate() {
        shares[i % n_shares].add_partition_offset(topic, *p, Offset::Offset(*high))?;
    }
    drop(probe);

    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consumed_total = Arc::new(AtomicU64::new(0));
    // Placeholder window until the producers' start time is fixed below.
    let window_cell = Arc::new(Mutex::new(None::<Window>));
    let mut consumer_threads = Vec::new();
    for (ci, tpl) in shares.into_iter().enumerate() {
        let mut cfg = client_config(bootstrap);
        cfg.set("group.id", "sluice-bench-unused")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("check.crcs", "false");
        for (k, v) in &w.consumer_config {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer = cfg.create()?;
        consumer.assign(&tpl)?;
        let stop = stop_consumers.clone();
        let total = consumed_total.clone();
        let errs = errors.clone();
        let window_cell = window_cell.clone();
        let handle = thread::Builder::new()
            .name(format!("consumer-{ci}"))
            .spawn(move || {
                let mut hist = new_histogram();
                let mut in_window = 0u64;
                let mut n_errors = 0u64;
                let mut window = None;
                while !stop.load(Ordering::Relaxed) {
                    let Some(res) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let now = clock.now_us();
                    match res {
                        Ok(m) => {
                            total.fetch_add(1, Ordering::Relaxed);
                            let Some(ts) = m.payload().and_then(|p| p.get(..8)) else {
                                continue;
                            };
                            let intended = u64::from_le_bytes(ts.try_into().unwrap());
                            if window.is_none() {
                                window = *window_cell.lock().unwrap();
                            }
                            if window.is_some_and(|w: Window| w.contains(intended)) {
                                in_window += 1;
                                record(&mut hist, intended, now);
                            }
                        }
                        Err(e) => {
                            n_errors += 1;
                            errs.push(format!("consume: {e}"));
                        }
                    }
                }
                (hist, in_window, n_errors)
            })?;
        consumer_threads.push(handle);
    }

    // The schedule: producers start together a little in the future, staggered by a
    // fraction of their period so the total stream is evenly spaced.
    let per_producer_rate = w.rate / w.producers as f64;
    let start_us = clock.now_us() + 500_000;
    let window = Window {
        start_us: start_us + (w.warmup_secs * 1e6) as u64,
        end_us: start_us + ((w.warmup_secs + w.duration_secs) * 1e6) as u64,
    };
    *window_cell.lock().unwrap() = Some(window);

    let mut shared = Vec::new();
    let mut producer_threads = Vec::new();
    for pi in 0..w.producers {
        let ps = Arc::new(ProducerShared {
            clock,
            window,
            hist: Mutex::new(new_histogram()),
            acked_window: AtomicU64::new(0),
            acked_during_window: AtomicU64::new(0),
            acked_total: AtomicU64::new(0),
            bytes_acked_during_window: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_log: errors.clone(),
        });
        shared.push(ps.clone());
        let mut cfg = client_config(bootstrap);
        cfg.set("acks", &w.acks)
            .set("compression.type", &w.compression)
            .set("linger.ms", w.linger_ms.to_string())
            .set("batch.size", w.batch_size.to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "60000");
        for (k, v) in &w.producer_config {
            cfg.set(k, v);
        }
        let producer: ThreadedProducer<DeliveryCtx> =
            cfg.create_with_context(DeliveryCtx(ps.clone()))?;
        let topic = topic.to_string();
        let keys = w.keys;
        let size = w.message_size;
        let my_start = start_us + (pi as f64 * 1e6 / w.rate) as u64;
        let end_us = window.end_us;
        let give_up_us = end_us + drain_timeout.as_micros() as u64;
        let errs = errors.clone();
        let handle = thread::Builder::new()
            .name(format!("producer-{pi}"))
            .spawn(move || {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (pi as u64 + 1));
                let mut payload = vec![0u8; size];
                let mut sent = 0u64;
                let mut send_errors = 0u64;
                let mut max_lag = 0u64;
                let mut i = 0u64;
                loop {
                    let intended = intended_us(my_start, per_producer_rate, i);
                    if intended >= end_us {
                        break;
                    }
                    let now = clock.now_us();
                    if now > give_up_us {
                        break;
                    }
                    if intended > now {
                        thread::sleep(Duration::from_micros(intended - now));
                    } else {
                        max_lag = max_lag.max(now - intended);
                    }
                    payload[..8].copy_from_slice(&intended.to_le_bytes());
                    // Fresh random filler per message, so compression sees no repeats.
                    for chunk in payload[8..].chunks_mut(8) {
                        let r = rng.next().to_le_bytes();
                        chunk.copy_from_slice(&r[..chunk.len()]);
                    }
                    let key: Option<Vec<u8>> = match keys {
                        Keys::None => None,
                        Keys::RoundRobin(n) => Some(format!("key-{}", i % n).into_bytes()),
                        Keys::Random => Some(rng.next().to_le_bytes().to_vec()),
                    };
                    let mut rec =
                        BaseRecord::with_opaque_to(&topic, intended as usize).payload(&payload[..]);
                    if let Some(k) = key.as_deref() {
                        rec = rec.key(k);
                    }
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        match producer.send(rec) {
                            Ok(()) => {
                                sent += 1;
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) if Instant::now() < deadline => {
                                rec = r;
                                thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => {
                                send_errors += 1;
                                errs.push(format!("send: {e}"));
                                break;
                            }
                        }
                    }
                    i += 1;
                }
                // Messages the schedule called for that were never sent because the producer
                // was still behind its schedule a drain timeout after the end of the run.
                let scheduled = (((end_us - my_start) as f64) * per_producer_rate / 1e6).ceil();
                let unsent = (scheduled as u64).saturating_sub(i);
                (producer, sent, send_errors, max_lag, unsent)
            })?;
        producer_threads.push(handle);
    }

    // Mark the window for the CPU sampling.
    sleep_until(clock.instant_at(window.start_us));
    on_window(true);
    sleep_until(clock.instant_at(window.end_us));
    on_window(false);

    let mut producers = Vec::new();
    let (mut sent, mut produce_errors, mut max_lag, mut unsent) = (0, 0, 0, 0);
    for h in producer_threads {
        let (p, s, e, lag, u) = h.join().map_err(|_| "producer thread panicked")?;
        sent += s;
        produce_errors += e;
        max_lag = max_lag.max(lag);
        unsent += u;
        producers.push(p);
    }
    let drain_deadline = Instant::now() + drain_timeout;
    for p in &producers {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if let Err(e) = p.flush(left) {
            errors.push(format!("flush: {e}"));
        }
    }
    let acked_total: u64 = shared
        .iter()
        .map(|s| s.acked_total.load(Ordering::Relaxed))
        .sum();
    // Consumers catch up with everything acked, or the drain time runs out.
    while consumed_total.load(Ordering::Relaxed) < acked_total && Instant::now() < drain_deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop_consumers.store(true, Ordering::Relaxed);
    let mut end_to_end = new_histogram();
    let (mut consumed_window, mut consume_errors) = (0, 0);
    for h in consumer_threads {
        let (hist, n, e) = h.join().map_err(|_| "consumer thread panicked")?;
        end_to_end
            .add(&hist)
            .map_err(|e| format!("merge histograms: {e}"))?;
        consumed_window += n;
        consume_errors += e;
    }
    drop(producers);

    let mut produce_ack = new_histogram();
    let (mut acked_window, mut acked_during_window, mut bytes) = (0, 0, 0);
    for s in &shared {
        produce_ack
            .add(&*s.hist.lock().unwrap())
            .map_err(|e| format!("merge histograms: {e}"))?;
        acked_window += s.acked_window.load(Ordering::Relaxed);
        acked_during_window += s.acked_during_window.load(Ordering::Relaxed);
        bytes += s.bytes_acked_during_window.load(Ordering::Relaxed);
        produce_errors += s.errors.load(Ordering::Relaxed);
    }
    let first_errors = errors.first.lock().unwrap().clone();
    Ok(RunOutcome {
        window,
        produce_ack,
        end_to_end,
        sent,
        unsent,
        acked_window,
        acked_during_window,
        acked_total,
        consumed_window,
        consumed_total: consumed_total.load(Ordering::Relaxed),
        produce_errors,
        consume_errors,
        first_errors,
        bytes_acked_during_window: bytes,
        max_send_lag_us: max_lag,
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}
