//! A worker's rows on their way to its peers: each block's routed rows
//! handed over at once to a worker of this process, or sent over the
//! network from a spawned task; then every send waited for. A solve sends
//! each block's rows as it is solved; `SendRows` sends the latest rows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;

use crate::job::{block_routes, PeerPlan, PeerSend, SolvedBlock};
use crate::peers::Peers;

/// A block's rows to one peer: handed over already (a worker of this
/// process), or on their way; the bytes sent.
enum Sent {
    Done(Result<u64, Status>),
    Spawned(tokio::task::JoinHandle<Result<u64, Status>>),
}

/// The sends of one call, from any thread of the solve.
pub struct RowSends {
    peers: Arc<Peers>,
    rt: tokio::runtime::Handle,
    job_id: String,
    timeout: Duration,
    sent: Mutex<Vec<Sent>>,
}

impl RowSends {
    /// `timeout`: how long a remote peer gets to take one block's rows.
    pub fn new(peers: Arc<Peers>, rt: tokio::runtime::Handle, job_id: String, timeout: Duration) -> Self {
        RowSends {
            peers,
            rt,
            job_id,
            timeout,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Send block `b`'s rows, as the fixed side of `step`, to every peer
    /// whose route holds some of them.
    pub fn send_block(&self, plan: &PeerPlan, step: u64, k: usize, b: &SolvedBlock) {
        for (addr, rows) in block_routes(plan, b) {
            let send = PeerSend {
                job_id: &self.job_id,
                plan,
                step,
                k,
                block: b,
                rows,
            };
            let sent = match self.peers.send_direct(addr, &send) {
                Some(done) => Sent::Done(done),
                None => {
                    let (peers, addr, chunks, timeout) = (self.peers.clone(), addr.to_owned(), send.messages(), self.timeout);
                    Sent::Spawned(self.rt.spawn(async move { peers.send_remote(&addr, chunks, timeout).await }))
                }
            };
            self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(sent);
        }
    }

    /// Wait for every send (from a blocking thread): the bytes sent, or
    /// the first failure, once all are done.
    pub fn wait(self) -> Result<u64, Status> {
        let sent = self.sent.into_inner().unwrap_or_else(|p| p.into_inner());
        self.rt.block_on(async {
            let mut bytes = Ok(0u64);
            for s in sent {
                let one = match s {
                    Sent::Done(done) => done,
                    Sent::Spawned(task) => task
                        .await
                        .unwrap_or_else(|e| Err(Status::internal(format!("a peer send failed: {e}")))),
                };
                bytes = match (bytes, one) {
                    (Ok(total), Ok(b)) => Ok(total + b),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                };
            }
            bytes
        })
    }
}
