//! `worker --health-check ADDR`: ask a worker's standard gRPC health service
//! whether it is serving. Container images built `FROM scratch` have no shell
//! or curl, so the healthcheck of docker-compose and Kubernetes runs the
//! worker binary itself in this mode.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("'{0}' is not a worker address (HOST:PORT or :PORT)")]
    Address(String),
    #[error("probe TLS: {0}")]
    Tls(String),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("health check of {addr} failed: {status}")]
    Rpc { addr: String, status: tonic::Status },
    #[error("worker {addr} is not serving (status {status:?})")]
    NotServing { addr: String, status: ServingStatus },
}

/// `:PORT` means this host's loopback (the probe runs next to the worker).
fn target(addr: &str) -> Result<String, ProbeError> {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a);
    let a = match a.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => a.to_owned(),
    };
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(format!("http://{a}")),
        _ => Err(ProbeError::Address(addr.to_owned())),
    }
}

/// How the probe speaks TLS to a TLS worker.
#[derive(Debug, Clone)]
pub struct ProbeTls {
    /// The CA that signed the worker's certificate.
    pub ca: std::path::PathBuf,
    /// The name the worker's certificate is for (default: the address's host).
    pub domain: Option<String>,
    /// Certificate and key of the probe, for a worker that demands client certificates.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ProbeTls {
    fn config(&self) -> Result<tonic::transport::ClientTlsConfig, ProbeError> {
        let identity = self.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        als_net::tls::client_tls(&self.ca, identity, self.domain.as_deref()).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            ProbeError::Tls(format!("{e}{cause}"))
        })
    }
}

/// Ok when the worker at `addr` answers SERVING for the whole server within
/// `timeout`. The health service needs no token; a TLS worker needs `tls`.
pub async fn check(addr: &str, timeout: Duration, tls: Option<&ProbeTls>) -> Result<(), ProbeError> {
    let mut uri = target(addr)?;
    if tls.is_some() {
        uri = uri.replacen("http://", "https://", 1);
    }
    let mut endpoint = Endpoint::from_shared(uri).map_err(|_| ProbeError::Address(addr.to_owned()))?;
    if let Some(t) = tls {
        endpoint = endpoint.tls_config(t.config()?).map_err(|e| ProbeError::Tls(e.to_string()))?;
    }
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|source| ProbeError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| ProbeError::Rpc {
            addr: addr.to_owned(),
            status,
        })?;
    let status = ServingStatus::try_from(resp.into_inner().status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(ProbeError::NotServing {
            addr: addr.to_owned(),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(target(":50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(target("worker1:50051").unwrap(), "http://worker1:50051");
        assert_eq!(target("http://[::1]:7").unwrap(), "http://[::1]:7");
        assert!(target("worker1").is_err());
        assert!(target(":x").is_err());
        assert!(target(":50051x").is_err());
    }

    #[tokio::test]
    async fn serving_worker_passes_and_closed_port_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = crate::ServeOptions {
            // The health service is open to all: the probe needs no token.
            token: Some("secret".into()),
            threads: 1,
            idle_timeout: Duration::from_secs(60),
            tls: None,
            memory_budget: crate::job::default_memory_budget(),
            peer_tls: None,
            solve_turns: None,
            input_root: None,
            output_root: None,
        };
        let server = tokio::spawn(crate::serve(listener, opts, async {
            let _ = stopped.await;
        }));
        check(&addr, Duration::from_secs(5), None).await.expect("serving worker");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        // The port is closed now: nothing listens there.
        let err = check(&addr, Duration::from_secs(2), None).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }
}
