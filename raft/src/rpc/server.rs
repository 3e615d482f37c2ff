//! The receiving side: accepts peers and serves their batched messages.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::AsyncWriteExt;
use openraft::AsyncRuntime;
use tracing::{debug, warn};

use super::client::{read_frame, write_frame};
use super::wire::{self, Frame};
use super::{RPC_CONNECT_TIMEOUT, RPC_MAX_BATCH, RPC_MAX_CONNECTIONS, RPC_MAX_IN_FLIGHT};
use crate::network::{RaftRequest, RaftResponse};
use crate::runtime::net::{TcpListener, TcpStream};
use crate::runtime::{spawn_scoped, GlommioRuntime, Scoped};

/// Hands a message to the replica of `group` on this broker.
pub trait Router: 'static {
    fn route(&self, group: u64, request: RaftRequest) -> impl Future<Output = RaftResponse>;
}

/// A listening RPC endpoint; dropping it closes the listener and every connection.
pub struct Server {
    addr: SocketAddr,
    frames_received: Rc<Cell<u64>>,
    _accept: Scoped,
}

impl Server {
    /// Binds `addr` and serves peers on the current executor.
    pub fn bind<R: Router>(addr: SocketAddr, node_id: u64, router: Rc<R>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let frames_received: Rc<Cell<u64>> = Rc::default();
        let frames = frames_received.clone();
        let accept = spawn_scoped(async move {
            let connections: RefCell<Vec<(Rc<Cell<bool>>, Scoped)>> = RefCell::default();
            loop {
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "RPC accept failed");
                        GlommioRuntime::sleep(super::RPC_RECONNECT_BACKOFF).await;
                        continue;
                    }
                };
                let mut conns = connections.borrow_mut();
                conns.retain(|(done, _)| !done.get());
                if conns.len() >= RPC_MAX_CONNECTIONS {
                    warn!(
                        limit = RPC_MAX_CONNECTIONS,
                        "RPC connection refused: too many connections"
                    );
                    continue;
                }
                let done = Rc::new(Cell::new(false));
                let (router, frames, flag) = (router.clone(), frames.clone(), done.clone());
                let task = spawn_scoped(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(e) = connection(stream, node_id, router, frames).await {
                        match e.kind() {
                            std::io::ErrorKind::UnexpectedEof => debug!(?peer, "RPC peer left"),
                            _ => warn!(?peer, error = %e, "RPC connection closed"),
                        }
                    }
                    flag.set(true);
                });
                conns.push((done, task));
            }
        });
        Ok(Server {
            addr,
            frames_received,
            _accept: accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn frames_received(&self) -> u64 {
        self.frames_received.get()
    }
}

/// Counts messages being served; the reader waits while the count is at its limit.
#[derive(Default)]
struct InFlight {
    n: Cell<usize>,
    waiting: RefCell<Option<Waker>>,
}

impl InFlight {
    async fn acquire(&self) {
        std::future::poll_fn(|cx| {
            if self.n.get() < RPC_MAX_IN_FLIGHT {
                self.n.set(self.n.get() + 1);
                Poll::Ready(())
            } else {
                *self.waiting.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn release(&self) {
        self.n.set(self.n.get() - 1);
        if let Some(w) = self.waiting.borrow_mut().take() {
            w.wake();
        }
    }
}

async fn connection<R: Router>(
    mut stream: TcpStream,
    node_id: u64,
    router: Rc<R>,
    frames: Rc<Cell<u64>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    match GlommioRuntime::timeout(RPC_CONNECT_TIMEOUT, read_frame(&mut stream)).await {
        Ok(Ok(Frame::Hello { .. })) => {}
        Ok(Ok(other)) => {
            return Err(std::io::Error::other(format!(
                "expected hello, got {other:?}"
            )))
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::Error::other("no hello within the connect timeout")),
    }
    write_frame(&mut stream, &Frame::Hello { node_id }).await?;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (done_tx, done_rx) = flume::bounded::<(u64, RaftResponse)>(RPC_MAX_IN_FLIGHT);
    let in_flight = Rc::new(InFlight::default());
    let requests = {
        let in_flight = in_flight.clone();
        async move {
            loop {
                let frame = read_frame(&mut reader).await?;
                frames.set(frames.get() + 1);
                let Frame::Requests(envelopes) = frame else {
                    return Err::<(), _>(std::io::Error::other(
                        "a peer sent a frame other than requests",
                    ));
                };
                for env in envelopes {
                    in_flight.acquire().await;
                    let (router, done, in_flight) =
                        (router.clone(), done_tx.clone(), in_flight.clone());
                    // Runs to its end even if the connection closes: a Raft message half
                    // handled must not be cut off; its answer is then dropped.
                    GlommioRuntime::spawn(async move {
                        let answer = router.route(env.group, env.request).await;
                        let _ = done.send_async((env.id, answer)).await;
                        in_flight.release();
                    });
                }
            }
        }
    };
    let answers = async move {
        loop {
            let Ok(first) = done_rx.recv_async().await else {
                return Ok::<(), std::io::Error>(());
            };
            futures_lite::future::yield_now().await;
            let mut batch = vec![first];
            batch.extend(done_rx.try_iter().take(RPC_MAX_BATCH - 1));
            let mut buf = Vec::new();
            wire::encode(&Frame::Responses(batch), &mut buf).map_err(std::io::Error::other)?;
            writer.write_all(&buf).await?;
        }
    };
    match GlommioRuntime::select2(std::pin::pin!(requests), std::pin::pin!(answers)).await {
        openraft_rt::Select2::First(r) | openraft_rt::Select2::Second(r) => r,
    }
}
