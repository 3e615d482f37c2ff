//! The admin port: `/health` (the process serves), `/ready` (metadata loaded, listeners up)
//! and `/metrics` (Prometheus text). A deliberately tiny HTTP/1.0 responder on shard 0.

use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;

use crate::shard::Shard;

/// Bytes of an admin request read before answering; the path is all we need.
const REQUEST_HEAD_MAX_BYTES: usize = 4096;

pub fn start(shard: Rc<Shard>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
    glommio::spawn_local(async move {
        while let Ok(mut stream) = listener.accept().await {
            let s = shard.clone();
            glommio::spawn_local(async move {
                let mut buf = vec![0u8; REQUEST_HEAD_MAX_BYTES];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/health" | "/ready" => ("200 OK", "ok\n".to_string()),
                    "/metrics" => ("200 OK", metrics(&s).await),
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

/// Gauges gathered from every shard at scrape time.
async fn metrics(s: &Rc<Shard>) -> String {
    let mut out = String::from(
        "# HELP sluice_partitions Partitions owned by a shard.\n# TYPE sluice_partitions gauge\n\
         # HELP sluice_log_bytes Bytes in a shard's partition logs.\n# TYPE sluice_log_bytes gauge\n",
    );
    for target in 0..s.count {
        let (parts, bytes) = s
            .run_on(target, |sh| async move {
                let ps = sh.local_partitions();
                (ps.len(), ps.iter().map(|p| p.size_bytes()).sum::<u64>())
            })
            .await;
        out.push_str(&format!(
            "sluice_partitions{{shard=\"{target}\"}} {parts}\n"
        ));
        out.push_str(&format!("sluice_log_bytes{{shard=\"{target}\"}} {bytes}\n"));
    }
    out
}
