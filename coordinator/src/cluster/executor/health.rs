//! The watchdog: while a worker works, it must keep answering health checks.

use std::time::Duration;

use crate::cluster::client::WorkerHandle;

use super::rpc::HalfError;
use super::ClusterExecutor;

/// How the coordinator watches its workers.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// A worker that does not answer a health check within this long is taken as lost.
    pub worker_timeout: Duration,
    /// Health checks of a busy worker are this far apart.
    pub heartbeat: Duration,
    /// How long a lost worker's address gets to answer before each half-iteration.
    pub revive_timeout: Duration,
}

impl Default for FaultOptions {
    fn default() -> Self {
        FaultOptions {
            worker_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_millis(500),
            revive_timeout: Duration::from_millis(500),
        }
    }
}

/// Run `work` while health-checking the worker; a worker that stops answering is lost.
pub(super) async fn watched<T>(
    w: &WorkerHandle,
    faults: &FaultOptions,
    work: impl std::future::Future<Output = Result<T, HalfError>>,
) -> Result<T, HalfError> {
    tokio::select! {
        r = work => r,
        e = watchdog(w, faults) => Err(HalfError::Lost(e)),
    }
}

/// Health-check the worker every heartbeat; ends, saying why, once it stops answering.
pub(crate) async fn watchdog(w: &WorkerHandle, faults: &FaultOptions) -> String {
    loop {
        tokio::time::sleep(faults.heartbeat).await;
        if let Err(why) = answers(w, faults.worker_timeout).await {
            return why;
        }
    }
}

/// One health check of the worker, answered within `timeout`, or why not.
pub(crate) async fn answers(w: &WorkerHandle, timeout: Duration) -> Result<(), String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(w.transport.clone());
    let check = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("worker {}: health check failed: {}", w.addr, s.message())),
        Err(_) => Err(format!("worker {}: no answer for {timeout:?}", w.addr)),
    }
}

/// Of `workers` (index, handle), those that do not answer a health check
/// within `timeout`, and why.
pub(crate) async fn silent(workers: Vec<(usize, WorkerHandle)>, timeout: Duration) -> Vec<(usize, String)> {
    let checks = workers.into_iter().map(|(w, h)| async move { (w, answers(&h, timeout).await) });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(|(w, r)| r.err().map(|why| (w, why)))
        .collect()
}

impl ClusterExecutor<'_> {
    /// `work` on worker `w`, watched (a worker that stops answering is
    /// lost, not waited for), answering with `w`: one of the futures a
    /// round of calls runs together.
    pub(super) fn watch<T, Fut>(
        &self,
        w: usize,
        work: Fut,
    ) -> impl std::future::Future<Output = (usize, Result<T, HalfError>)> + use<T, Fut>
    where
        Fut: std::future::Future<Output = Result<T, HalfError>>,
    {
        let (handle, faults) = (self.slots[w].handle.clone(), self.faults.clone());
        async move { (w, watched(&handle, &faults, work).await) }
    }

    /// `call` on every live worker at once, each watched (a worker that
    /// stops answering is lost, not waited for): the results by worker.
    pub(super) fn on_live_workers<T, F, Fut>(&self, call: F) -> Vec<(usize, Result<T, HalfError>)>
    where
        F: Fn(usize, WorkerHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, HalfError>>,
    {
        let futs: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive)
            .map(|(w, s)| self.watch(w, call(w, s.handle.clone())))
            .collect();
        self.rt.block_on(futures::future::join_all(futs))
    }
}
