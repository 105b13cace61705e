//! The cluster token: every call must present it; compared in constant time.

use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every request when a token is configured.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<std::sync::Arc<[u8]>>,
}

impl TokenCheck {
    pub fn new(token: Option<String>) -> Self {
        TokenCheck {
            token: token.map(|t| std::sync::Arc::from(t.into_bytes())),
        }
    }

    pub fn check(&self, req: &Request<()>) -> Result<(), Status> {
        let Some(want) = &self.token else { return Ok(()) };
        let got = req
            .metadata()
            .get(als_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing cluster token"))?;
        if constant_time_eq(got.as_bytes(), want) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong cluster token"))
        }
    }
}

pub use als_proto::token::constant_time_eq;

/// The token from `--token-file` or else `ALS_TOKEN`, by the rule the coordinator follows too.
pub fn resolve_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    Ok(als_proto::token::resolve_token_from_env(file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        let check = TokenCheck::new(Some("s3".into()));
        let mut req = Request::new(());
        assert!(check.check(&req).is_err());
        req.metadata_mut().insert("authorization", "Bearer s3".parse().unwrap());
        assert!(check.check(&req).is_ok());
        req.metadata_mut().insert("authorization", "Bearer s4".parse().unwrap());
        assert!(check.check(&req).is_err());
        assert!(TokenCheck::new(None).check(&Request::new(())).is_ok());
    }
}
