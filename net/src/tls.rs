//! TLS (rustls, through tonic) from PEM files, for the three ends that
//! speak it: the worker's server, the coordinator's client, and the
//! worker's own health probe.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError {
        path: path.to_path_buf(),
        source,
    })
}

/// A client's settings: the CA that signs the servers' certificates,
/// optionally this client's certificate and key (mutual TLS), and the name
/// the server's certificate must carry when it is not the address's host.
pub fn client_tls(ca: &Path, identity: Option<(&Path, &Path)>, domain: Option<&str>) -> Result<ClientTlsConfig, PemError> {
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some((cert, key)) = identity {
        cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(d) = domain {
        cfg = cfg.domain_name(d);
    }
    Ok(cfg)
}

/// A server's settings: its certificate and key and, for mutual TLS, the CA
/// that signs its clients' certificates.
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTlsConfig, PemError> {
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_its_cause() {
        let e = client_tls(Path::new("/nonexistent/ca.pem"), None, None).unwrap_err();
        assert_eq!(e.to_string(), "cannot read /nonexistent/ca.pem");
        assert_eq!(std::error::Error::source(&e).map(|s| s.to_string().is_empty()), Some(false));
        let e = server_tls(Path::new("/nonexistent/c.pem"), Path::new("/nonexistent/k.pem"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/c.pem"));
    }
}
