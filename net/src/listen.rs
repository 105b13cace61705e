//! Listen addresses: `HOST:PORT`, or `:PORT` for all interfaces.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("listen address '{0}' must be HOST:PORT or :PORT")]
pub struct BadListenAddress(pub String);

/// The address to bind: `:50051` means all interfaces, else `HOST:PORT` as given.
pub fn parse_listen(s: &str) -> Result<String, BadListenAddress> {
    let s = s.trim();
    let addr = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_owned(),
    };
    if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        Ok(addr)
    } else {
        Err(BadListenAddress(s.to_owned()))
    }
}

/// Whether a bound address is loopback (the one place a server may run without a token).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Why a server did not start listening.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Address(#[from] BadListenAddress),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// `secure` says how to fix it (which flag gives the token).
    #[error("refusing to listen on {addr} without a token: {secure}, listen on 127.0.0.1, or pass --insecure")]
    NoToken { addr: SocketAddr, secure: String },
}

/// Bind `listen` (see [`parse_listen`]). A server without a token binds
/// only loopback, unless `insecure` says the network is trusted; `secure`
/// tells the operator how to give it a token.
pub async fn bind_guarded(listen: &str, has_token: bool, insecure: bool, secure: &str) -> Result<tokio::net::TcpListener, BindError> {
    let addr = parse_listen(listen)?;
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| BindError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| BindError::Bind { addr, source })?;
    if !has_token && !is_loopback(&local) && !insecure {
        return Err(BindError::NoToken {
            addr: local,
            secure: secure.to_owned(),
        });
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_a_listen_address() {
        assert_eq!(parse_listen(":50051").unwrap(), "0.0.0.0:50051");
        assert_eq!(parse_listen(" 127.0.0.1:8080 ").unwrap(), "127.0.0.1:8080");
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9");
        for bad in ["", "host", ":", ":99999", "host:port"] {
            assert_eq!(parse_listen(bad), Err(BadListenAddress(bad.trim().to_owned())), "{bad}");
        }
        assert!(is_loopback(&"127.0.0.1:1".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:1".parse().unwrap()));
    }

    #[tokio::test]
    async fn only_loopback_without_a_token_unless_insecure() {
        let secure = "pass --token-file";
        assert!(bind_guarded("127.0.0.1:0", false, false, secure).await.is_ok());
        let e = bind_guarded("0.0.0.0:0", false, false, secure).await.unwrap_err();
        assert!(e.to_string().contains("without a token: pass --token-file"), "{e}");
        assert!(bind_guarded("0.0.0.0:0", true, false, secure).await.is_ok());
        assert!(bind_guarded("0.0.0.0:0", false, true, secure).await.is_ok());
        assert!(matches!(
            bind_guarded("nope", true, false, secure).await,
            Err(BindError::Address(_))
        ));
    }
}
