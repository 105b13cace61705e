//! The watchdog: while a worker works, it must keep answering health checks.

use std::time::Duration;

use crate::cluster::client::WorkerHandle;

use super::rpc::HalfError;

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
    let mut health = tonic_health::pb::health_client::HealthClient::new(w.transport.clone());
    let addr = &w.addr;
    loop {
        tokio::time::sleep(faults.heartbeat).await;
        let check = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
        match tokio::time::timeout(faults.worker_timeout, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => return format!("worker {addr}: health check failed: {}", s.message()),
            Err(_) => return format!("worker {addr}: no answer for {:?}", faults.worker_timeout),
        }
    }
}
