//! The worker's connections to its peers, for sending solved rows straight
//! to the workers that need them. Peer calls carry the cluster token, and
//! TLS where it is configured, like the coordinator's; a connection is made
//! once per peer and kept.

use std::collections::HashMap;
use std::time::Duration;

use als_net::client::{connect, ClientOptions, WorkerHandle};
use als_net::transport;
use als_proto::encoded_bytes;
use als_proto::pb::{IngestRowsChunk, LookupItemsRequest, LookupItemsResponse, PeerChunk, RouteChunk};
use tokio::sync::Mutex;
use tonic::Status;

use crate::job::PeerSend;
use crate::peer_intake::{hand_over, slot_of};

pub struct Peers {
    /// How to reach a peer; `None` where this worker cannot (it serves TLS
    /// but was given no CA for its peers' certificates).
    opts: Option<ClientOptions>,
    conns: Mutex<HashMap<String, WorkerHandle>>,
}

/// Transfer rate a peer send is given time for, on top of the fixed bound.
const SLOWEST_BYTES_PER_SECOND: u64 = 10 << 20;

impl Peers {
    pub fn new(opts: Option<ClientOptions>) -> Peers {
        Peers {
            opts,
            conns: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.opts.is_some()
    }

    async fn client(&self, addr: &str) -> Result<WorkerHandle, Status> {
        let opts = self
            .opts
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("this worker cannot reach peers"))?;
        if let Some(h) = self.conns.lock().await.get(addr) {
            return Ok(h.clone());
        }
        let h = connect(addr, opts)
            .await
            .map_err(|e| als_proto::fault::peer_unreachable(format!("peer {addr}: {e:#}")))?;
        self.conns.lock().await.insert(addr.to_owned(), h.clone());
        Ok(h)
    }

    /// Send a peer that [`Peers::send_direct`] cannot reach its messages
    /// over the network, within `timeout` plus the time the bytes take at a
    /// slow link; the bytes sent. A peer that cannot take them fails the
    /// send, and its connection is dropped so the next send connects afresh.
    pub async fn send_remote(&self, addr: &str, chunks: Vec<PeerChunk>, timeout: Duration) -> Result<u64, Status> {
        let bytes = encoded_bytes(&chunks);
        self.bounded(addr, bytes, timeout, |mut h: WorkerHandle| async move {
            h.client.peer_rows(tokio_stream::iter(chunks)).await.map(|_| ())
        })
        .await
        .map(|()| bytes)
    }

    /// Rows for one of the peer's blocks while blocks are built (its
    /// `IngestRows`), bounded as [`Peers::send_remote`]; the bytes sent.
    pub async fn ingest_rows(&self, addr: &str, chunks: Vec<IngestRowsChunk>, timeout: Duration) -> Result<u64, Status> {
        let bytes = encoded_bytes(&chunks);
        self.bounded(addr, bytes, timeout, |mut h: WorkerHandle| async move {
            h.client.ingest_rows(tokio_stream::iter(chunks)).await.map(|_| ())
        })
        .await
        .map(|()| bytes)
    }

    /// The rows of items in one of the peer's item blocks (its `LookupItems`).
    pub async fn lookup_items(&self, addr: &str, req: LookupItemsRequest, timeout: Duration) -> Result<LookupItemsResponse, Status> {
        let bytes = prost::Message::encoded_len(&req) as u64;
        self.bounded(addr, bytes, timeout, |mut h: WorkerHandle| async move {
            h.client.lookup_items(req).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Ask a peer to send this worker rows (its `SetRoutes`), bounded as
    /// [`Peers::send_remote`]; the bytes sent.
    pub async fn set_routes(&self, addr: &str, chunks: Vec<RouteChunk>, timeout: Duration) -> Result<u64, Status> {
        let bytes = encoded_bytes(&chunks);
        self.bounded(addr, bytes, timeout, |mut h: WorkerHandle| async move {
            h.client.set_routes(tokio_stream::iter(chunks)).await.map(|_| ())
        })
        .await
        .map(|()| bytes)
    }

    /// One call to a peer carrying `bytes`, within `timeout` plus their time
    /// at a slow link; on failure the connection is dropped.
    async fn bounded<T, F, Fut>(&self, addr: &str, bytes: u64, timeout: Duration, call: F) -> Result<T, Status>
    where
        F: FnOnce(WorkerHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let bound = timeout + Duration::from_secs(bytes / SLOWEST_BYTES_PER_SECOND);
        let work = async { call(self.client(addr).await?).await };
        let res = match tokio::time::timeout(bound, work).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!("no answer within {bound:?}"))),
        };
        match res {
            Ok(t) => Ok(t),
            Err(s) => {
                self.conns.lock().await.remove(addr);
                Err(refused_or_lost(addr, s))
            }
        }
    }

    /// Hand a worker of this process (not killed) its rows on the calling
    /// thread, straight from the solved block, with the checks of the call;
    /// the bytes the messages would have taken. `None` where `addr` is no
    /// such worker. A solving thread calls it, so no task is woken and no
    /// runtime thread takes a core from the solvers for the copy.
    pub fn send_direct(&self, addr: &str, send: &PeerSend) -> Option<Result<u64, Status>> {
        let slot = transport::lookup(addr).and_then(|w| w.direct()).and_then(slot_of)?;
        let done = hand_over(&slot, send.job_id, &send.direct());
        Some(done.map(|()| send.encoded_len()).map_err(|s| refused_or_lost(addr, s)))
    }
}

/// A failed send as the sender's solve reports it.
fn refused_or_lost(addr: &str, s: Status) -> Status {
    match als_proto::fault::fault_of(&s) {
        // The peer refused the rows as malformed: a bug, as with any protocol breach.
        als_proto::fault::Fault::Protocol => Status::invalid_argument(format!("peer {addr} refused our rows: {}", s.message())),
        _ => als_proto::fault::peer_unreachable(format!("peer {addr}: {}", s.message())),
    }
}
