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
}
