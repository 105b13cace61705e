//! Connections to workers: token on every call, deadlines, the handshake.

use std::time::Duration;

use als_proto::pb::worker_client::WorkerClient;
use als_proto::pb::{HandshakeRequest, HandshakeResponse};
use als_proto::{http2, PROTOCOL_VERSION};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use crate::transport::{self, Transport};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub token: Option<String>,
    pub connect_timeout: Duration,
    /// TLS towards the workers (rustls); a client identity makes it mutual.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            token: None,
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// TLS settings from PEM files (the one reader, in `als-net`): the CA that
/// signs worker certificates, and optionally this coordinator's certificate
/// and key (mutual TLS).
pub use crate::tls::client_tls;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(als_proto::AUTH_HEADER, h.clone());
        }
        Ok(req)
    }
}

pub type Client = WorkerClient<InterceptedService<Transport, AuthInterceptor>>;

/// Why a worker could not be reached or would not take this caller; every
/// one names the worker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("worker {addr}: cannot connect: no such in-process worker")]
    NoSuchInProcess { addr: String },
    #[error("the cluster token must be printable ASCII")]
    BadToken,
    #[error("worker {addr}: invalid address")]
    BadAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("worker {addr}: bad TLS settings")]
    BadTls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("worker {addr}: no answer within {timeout:?}")]
    NoAnswer { addr: String, timeout: Duration },
    #[error("worker {addr}: cannot connect")]
    Unreachable {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("worker {addr}: handshake timed out after {timeout:?}")]
    HandshakeTimeout { addr: String, timeout: Duration },
    #[error("worker {addr}: handshake refused: {message}")]
    Refused { addr: String, message: String },
    #[error("worker {addr}")]
    Version {
        addr: String,
        #[source]
        source: als_proto::VersionMismatch,
    },
}

/// A connected, handshaken worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub addr: String,
    pub client: Client,
    /// The raw transport, for the health service (open to all, no token needed).
    pub transport: Transport,
    pub info: HandshakeResponse,
}

impl WorkerHandle {
    /// The worker sends the rows it solves to its peers (it offers peer exchange).
    pub fn exchanges_rows(&self) -> bool {
        self.info.capabilities.iter().any(|c| c == als_proto::PEER_EXCHANGE)
    }
}

fn endpoint_uri(addr: &str, tls: bool) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") || addr.starts_with("unix:") {
        addr.to_owned()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Connect and handshake; every failure names the worker.
pub async fn connect(addr: &str, opts: &ClientOptions) -> Result<WorkerHandle, ConnectError> {
    let named = || addr.to_owned();
    let transport = match addr.strip_prefix(transport::IN_PROCESS_SCHEME) {
        Some(_) => Transport::InProcess(transport::lookup(addr).ok_or_else(|| ConnectError::NoSuchInProcess { addr: named() })?),
        None => Transport::Network(connect_channel(addr, opts).await?),
    };
    let header = match &opts.token {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| ConnectError::BadToken)?),
        None => None,
    };
    let mut client = WorkerClient::with_interceptor(transport.clone(), AuthInterceptor { header })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let req = HandshakeRequest {
        protocol_version: PROTOCOL_VERSION,
        coordinator: format!("coordinator {}", env!("CARGO_PKG_VERSION")),
        required_capabilities: vec!["gramian-reduce".into()],
    };
    let info = tokio::time::timeout(opts.connect_timeout, client.handshake(req))
        .await
        .map_err(|_| ConnectError::HandshakeTimeout {
            addr: named(),
            timeout: opts.connect_timeout,
        })?
        .map_err(|s| ConnectError::Refused {
            addr: named(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    als_proto::check_version("worker", info.protocol_version).map_err(|source| ConnectError::Version { addr: named(), source })?;
    tracing::info!(worker = addr, threads = info.threads, version = %info.worker_version, "worker connected");
    Ok(WorkerHandle {
        addr: addr.to_owned(),
        client,
        transport,
        info,
    })
}

async fn connect_channel(addr: &str, opts: &ClientOptions) -> Result<tonic::transport::Channel, ConnectError> {
    let named = || addr.to_owned();
    let mut endpoint = Endpoint::from_shared(endpoint_uri(addr, opts.tls.is_some()))
        .map_err(|source| ConnectError::BadAddress { addr: named(), source })?
        .connect_timeout(opts.connect_timeout)
        .initial_stream_window_size(Some(http2::STREAM_WINDOW))
        .initial_connection_window_size(Some(http2::CONNECTION_WINDOW))
        .max_frame_size(Some(http2::MAX_FRAME))
        .tcp_nodelay(true);
    if let Some(tls) = &opts.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|source| ConnectError::BadTls { addr: named(), source })?;
    }
    tokio::time::timeout(opts.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| ConnectError::NoAnswer {
            addr: named(),
            timeout: opts.connect_timeout,
        })?
        .map_err(|source| ConnectError::Unreachable { addr: named(), source })
}
