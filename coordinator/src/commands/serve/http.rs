//! The HTTP server of `serve`, hardened for the open network: what one
//! client can make the server hold is bounded.
//!
//! - a connection must send its request head within [`Limits::header_read_timeout`]
//!   (a client that never finishes its headers is dropped);
//! - a request is answered within [`Limits::request_timeout`] or gets 503;
//! - at most [`Limits::max_connections`] connections are open at once (the
//!   rest wait in the listen backlog), well below the descriptor limit;
//! - on SIGTERM the listener closes, open connections finish their request,
//!   and after [`Limits::shutdown_grace`] the server stops regardless;
//! - the bearer token (if any) is checked in constant time on every route but `/health`;
//! - every error answer, the router's own (405, 413, 414, ...) included, is `{"error": ...}` JSON.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use super::error::ApiError;

/// What one client can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Longest request target (path and query) answered; longer ones get 414.
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// The router with the token check, the URI and time limits, and JSON error bodies.
pub fn harden(app: Router, token: Option<String>, limits: &Limits) -> Router {
    let token: Option<Arc<[u8]>> = token.map(|t| Arc::from(t.into_bytes()));
    let (max_uri, timeout) = (limits.max_uri_bytes, limits.request_timeout);
    app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move { guard(req, next, token.as_deref(), max_uri, timeout).await }
    }))
}

async fn guard(req: Request, next: Next, token: Option<&[u8]>, max_uri: usize, timeout: Duration) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > max_uri {
        return ApiError {
            status: StatusCode::URI_TOO_LONG,
            message: format!("the request target is {uri_len} bytes long (limit {max_uri})"),
        }
        .into_response();
    }
    if let Some(want) = token {
        if req.uri().path() != "/health" {
            let got = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let ok = got.is_some_and(|g| als_proto::token::constant_time_eq(g.as_bytes(), want));
            if !ok {
                let mut r = ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    message: "missing or wrong bearer token".into(),
                }
                .into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => json_errors(r).await,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the request took longer than {timeout:?}"),
        }
        .into_response(),
    }
}

/// An error answer without a JSON body (the router's 405, an extractor's
/// plain-text rejection) becomes `{"error": text}` with the same status.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    // Error bodies are short texts; anything unreadable falls back to the reason.
    let text = match tokio::time::timeout(Duration::from_secs(1), body.collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        _ => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = ApiError { status, message }.into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Serve `app` on `listener` until `shutdown` resolves, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        let conn = b.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the grace period; stopping anyway");
        }
    }
    Ok(())
}
