//! The admin port: `/health` (the process serves), `/ready` (joined the cluster, the image
//! current, every local replica open and led) and `/metrics` (Prometheus text, rendered by
//! `telemetry`). A deliberately tiny HTTP/1.0 responder on shard 0. With
//! `SLUICE_TEST_FAULTS=1` in its environment (the fault suite's brokers), also
//! `/faults/sync-delay-ms/N`: every fdatasync from then on waits N ms first (a slow disk).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;

use crate::shard::{Readiness, Shard};
use crate::telemetry;

/// Bytes of an admin request read before answering; the path is all we need.
const REQUEST_HEAD_MAX_BYTES: usize = 4096;
/// The environment variable that turns the fault-injection paths on.
const TEST_FAULTS_ENV: &str = "SLUICE_TEST_FAULTS";
const SYNC_DELAY_PATH: &str = "/faults/sync-delay-ms/";

pub fn start(shard: Rc<Shard>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
    start_upkeep();
    let faults = std::env::var(TEST_FAULTS_ENV).is_ok_and(|v| v == "1");
    glommio::spawn_local(async move {
        while let Ok(mut stream) = listener.accept().await {
            let s = shard.clone();
            glommio::spawn_local(async move {
                // A head can arrive in pieces: read until its blank line, EOF or the bound.
                let mut buf = vec![0u8; REQUEST_HEAD_MAX_BYTES];
                let mut n = 0;
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/health" => ("200 OK", "ok\n".to_string()),
                    "/ready" => match readiness(&s).await {
                        Ok(()) => ("200 OK", "ok\n".to_string()),
                        Err(why) => ("503 Service Unavailable", why + "\n"),
                    },
                    "/metrics" => ("200 OK", metrics(&s).await),
                    p if faults && p.starts_with(SYNC_DELAY_PATH) => {
                        sync_delay(&p[SYNC_DELAY_PATH.len()..])
                    }
                    _ => ("404 Not Found", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.close().await;
            })
            .detach();
        }
    })
    .detach();
    Ok(())
}

/// `/faults/sync-delay-ms/N`: sets the delay before every fdatasync.
fn sync_delay(ms: &str) -> (&'static str, String) {
    match ms.parse::<u64>() {
        Ok(ms) if std::time::Duration::from_millis(ms) <= sluice_storage::SYNC_DELAY_MAX => {
            sluice_storage::set_sync_delay(std::time::Duration::from_millis(ms));
            tracing::warn!(ms, "fault injection: every fdatasync is delayed");
            ("200 OK", format!("fdatasync delayed by {ms} ms\n"))
        }
        _ => (
            "400 Bad Request",
            format!(
                "want a delay in ms up to {}\n",
                sluice_storage::SYNC_DELAY_MAX.as_millis()
            ),
        ),
    }
}

/// Whether this broker serves what it should: the controller group has a leader, every
/// shard has the image this broker applied, and every replica assigned here is open and
/// knows its leader (a broker that just started, or is cut off from a quorum, is not
/// ready). The reason otherwise.
async fn readiness(s: &Rc<Shard>) -> Result<(), String> {
    let Some(controller) = s.controller() else {
        return Err("not joined to the cluster yet".into());
    };
    if controller.leader().is_none() {
        return Err("the controller group has no leader".into());
    }
    let applied = controller.image().version;
    let mut gaps = Readiness::default();
    for target in 0..s.count {
        let (version, r) = s
            .run_on(target, |sh| async move {
                (sh.metadata().version, sh.readiness())
            })
            .await;
        if version < applied {
            return Err(format!(
                "shard {target} has metadata version {version}, the controller's is {applied}"
            ));
        }
        gaps.add(r);
    }
    if gaps.ready() {
        Ok(())
    } else {
        Err(format!(
            "local replicas: {} not open, {} offline, {} without a leader",
            gaps.unopened, gaps.offline, gaps.leaderless
        ))
    }
}

/// The exposition: every shard first sets its gauges (partition offsets and sizes,
/// utilisation), then the group coordinators set lag against the high watermarks gathered,
/// then the recorder renders everything. Two passes over the shards, each bounded by the
/// partitions and committed offsets a shard holds.
async fn metrics(s: &Rc<Shard>) -> String {
    let mut high_watermarks = HashMap::new();
    for target in 0..s.count {
        let marks = s
            .run_on(target, |sh| async move {
                sh.metrics.set_rpc_sent(sh.raft_peers().sent());
                sh.metrics.scrape(&sh.local_partitions())
            })
            .await;
        high_watermarks.extend(marks);
    }
    let high_watermarks = Arc::new(high_watermarks);
    for target in 0..s.count {
        let marks = high_watermarks.clone();
        s.run_on(target, move |sh| async move {
            telemetry::set_group_lag(&sh.groups, &marks)
        })
        .await;
    }
    telemetry::render().await
}

/// Folds histogram samples every `UPKEEP_INTERVAL`, so memory stays bounded between scrapes.
fn start_upkeep() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(telemetry::UPKEEP_INTERVAL).await;
            telemetry::upkeep();
        }
    })
    .detach();
}
