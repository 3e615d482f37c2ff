//! One client connection: read frames, decode, run each request as its own task, and write
//! responses strictly in request order (Kafka clients pipeline and rely on it).
//!
//! Memory is bounded twice: a request's bytes hold permits of the shard's
//! `queued.max.request.bytes` budget until its response is written (over budget, the
//! reader stops reading), and at most `MAX_INFLIGHT_REQUESTS_PER_CONNECTION` requests of
//! one connection are in flight.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use sluice_protocol::{decode_request, request_body_len, ApiKey, DecodeError};
use tracing::{debug, warn};

use crate::config::MAX_INFLIGHT_REQUESTS_PER_CONNECTION;
use crate::handlers;
use crate::shard::Shard;

type Pending = JoinHandle<Option<Bytes>>;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let m = &shard.metrics;
    m.connections_accepted.increment(1);
    m.connections_open.set(m.connections_open.get() + 1);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(MAX_INFLIGHT_REQUESTS_PER_CONNECTION);
    let writer_task = glommio::spawn_local(async move {
        while let Some(pending) = rx.recv().await {
            let Some(Some(bytes)) = pending.await else {
                continue;
            };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    if let Err(reason) = read_loop(&shard, &mut reader, &tx, peer).await {
        warn!(peer = ?peer, reason, "closing connection");
    }
    drop(tx);
    writer_task.await;
    let m = &shard.metrics;
    m.connections_open.set(m.connections_open.get() - 1);
}

async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    reader: &mut R,
    tx: &local_channel::LocalSender<Pending>,
    peer: Option<SocketAddr>,
) -> Result<(), String> {
    loop {
        let mut prefix = [0u8; 4];
        if reader.read_exact(&mut prefix).await.is_err() {
            return Ok(()); // peer closed
        }
        if shard.shutting_down.get() {
            return Ok(());
        }
        let len = request_body_len(prefix, shard.config.socket_request_max_bytes)
            .map_err(|e| e.to_string())?;
        // Over budget this waits: the socket is not read, so TCP pushes back on the client.
        let permit = shard
            .inflight_bytes
            .clone()
            .acquire_static_permit(len as u64)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = vec![0u8; len];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("frame cut short: {e}"))?;
        let pending: Pending = match decode_request(Bytes::from(body), &shard.versions) {
            Ok(req) => {
                debug!(peer = ?peer, api = ?req.api_key, version = req.api_version, "request");
                let s = shard.clone();
                glommio::spawn_local(async move {
                    let response = handlers::handle(s, req, peer).await;
                    drop(permit);
                    response
                })
                .detach()
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                version,
            }) => {
                // Kafka's answer: error 35 and the supported ranges, so the client retries lower.
                debug!(peer = ?peer, version, "ApiVersions version not supported; answering with ranges");
                let bytes = shard
                    .versions
                    .encode_unsupported_version_response(correlation_id)
                    .map_err(|e| e.to_string())?;
                drop(permit);
                glommio::spawn_local(async move { Some(bytes) }).detach()
            }
            Err(e) => return Err(e.to_string()),
        };
        if tx.send(pending).await.is_err() {
            return Ok(());
        }
    }
}
