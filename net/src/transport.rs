//! How a call reaches a worker: over the network (HTTP/2, a tonic
//! [`Channel`]), or, for `--local` workers, straight into the worker's
//! services in this process.
//!
//! The in-process path hands the request to the same router `worker
//! --listen` serves (the token check, the health service, the generated
//! server with its message limits), with the gRPC messages encoded and
//! decoded as on the wire. Only HTTP/2 and the socket are left out: on two
//! cores their framing, flow control and system calls cost the default mode
//! several milliseconds of CPU per iteration, taken from the solvers.
//!
//! A local worker can still be lost as a remote one is: [`InProcess::kill`]
//! fails its calls in flight and every later one as a dropped connection
//! would (`UNAVAILABLE`), so the fault tests see what a crash looks like.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::Status;
use tower_service::Service;

/// The prefix of in-process workers' addresses.
pub const IN_PROCESS_SCHEME: &str = "inproc:";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A worker reached over the network or in this process.
#[derive(Clone)]
pub enum Transport {
    Network(Channel),
    InProcess(InProcess),
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Network(c) => c.poll_ready(cx).map_err(Into::into),
            Transport::InProcess(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Network(c) => {
                let f = c.call(req);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Transport::InProcess(w) => w.call(req),
        }
    }
}

/// A worker's services in this process, with the switch that kills it.
#[derive(Clone)]
pub struct InProcess {
    routes: Routes,
    killed: tokio::sync::watch::Receiver<bool>,
    /// What the worker lets other workers of this process hand it straight,
    /// with no encoding (its type is the worker's business).
    direct: Option<Arc<dyn Any + Send + Sync>>,
}

/// The owner's side of an [`InProcess`] worker: kills it.
pub struct KillSwitch(tokio::sync::watch::Sender<bool>);

impl KillSwitch {
    /// Every call in flight and every later one fails as a lost connection.
    pub fn kill(&self) {
        let _ = self.0.send(true);
    }
}

fn lost() -> Status {
    Status::unavailable("in-process worker stopped: connection lost")
}

impl InProcess {
    pub fn new(routes: Routes) -> (InProcess, KillSwitch) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (
            InProcess {
                routes,
                killed: rx,
                direct: None,
            },
            KillSwitch(tx),
        )
    }

    /// The worker also takes `direct` from its peers in this process,
    /// without encoding. Only code in this process can reach it (through
    /// [`lookup`]), so no token is asked: whatever arrives is still checked.
    pub fn with_direct(mut self, direct: Arc<dyn Any + Send + Sync>) -> InProcess {
        self.direct = Some(direct);
        self
    }

    /// See [`InProcess::with_direct`].
    pub fn direct(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.direct.clone()
    }

    fn call(&self, req: http::Request<Body>) -> BoxFuture<Result<http::Response<Body>, BoxError>> {
        let mut routes = self.routes.clone();
        let mut killed = self.killed.clone();
        Box::pin(async move {
            if *killed.borrow() {
                return Err(lost().into());
            }
            let died = killed.clone();
            let answer = tokio::select! {
                r = routes.call(req) => match r {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                _ = killed.wait_for(|k| *k) => return Err(lost().into()),
            };
            // A streamed answer breaks off where the worker dies.
            Ok(answer.map(|body| Body::new(Killable::new(body, died))))
        })
    }
}

/// A response body that ends with [`lost`] once its worker is killed.
struct Killable {
    inner: Body,
    died: BoxFuture<()>,
}

impl Killable {
    fn new(inner: Body, mut killed: tokio::sync::watch::Receiver<bool>) -> Killable {
        let died = Box::pin(async move {
            // A dropped switch (the worker shut down cleanly) never fires.
            if killed.wait_for(|k| *k).await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        Killable { inner, died }
    }
}

impl http_body::Body for Killable {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        if self.died.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(lost())));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// In-process workers by address, for [`super::client::connect`]: a
/// restarted worker answers at its old address, as a restarted process would.
static REGISTRY: Mutex<Option<HashMap<String, InProcess>>> = Mutex::new(None);

pub fn register(addr: &str, w: InProcess) {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new).insert(addr.to_owned(), w);
}

pub fn unregister(addr: &str) {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = g.as_mut() {
        m.remove(addr);
    }
}

/// The worker at `addr`, if one is registered and alive.
pub fn lookup(addr: &str) -> Option<InProcess> {
    let g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref()?.get(addr).filter(|w| !*w.killed.borrow()).cloned()
}
