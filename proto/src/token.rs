//! The cluster token: one rule for what a token may be, and one way to read
//! it, for the worker and the coordinator alike, checked at start-up.
//!
//! A token travels as `authorization: Bearer <token>` metadata, so it must
//! be visible ASCII (no spaces or control characters): a token the
//! coordinator cannot send is refused by the worker too, when it starts.

use std::path::{Path, PathBuf};

/// Environment variable holding the token when no token file is given.
pub const TOKEN_ENV: &str = "ALS_TOKEN";

/// Longest token accepted (it is sent with every call).
pub const MAX_TOKEN_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token {from} is empty")]
    Empty { from: String },
    #[error("the token {from} {problem}: a token is 1 to {MAX_TOKEN_BYTES} visible ASCII characters (no spaces or control characters)")]
    Invalid { from: String, problem: String },
}

/// `token` if it follows the rule; `from` says where it came from, for the error.
pub fn validate_token(token: &str, from: &str) -> Result<(), TokenError> {
    let invalid = |problem: String| TokenError::Invalid {
        from: from.to_string(),
        problem,
    };
    if token.is_empty() {
        return Err(TokenError::Empty { from: from.to_string() });
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(format!("is {} bytes long", token.len())));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(format!("contains the character {c:?}")));
    }
    Ok(())
}

/// The token from `file` (surrounding whitespace and a UTF-8 BOM ignored) or
/// else from `env` (the value of [`TOKEN_ENV`]); `None` when neither is set.
pub fn resolve_token(file: Option<&Path>, env: Option<String>) -> Result<Option<String>, TokenError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim_start_matches('\u{feff}').trim();
        validate_token(token, &format!("in {}", path.display()))?;
        return Ok(Some(token.to_string()));
    }
    match env.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => {
            validate_token(t, &format!("in {TOKEN_ENV}"))?;
            Ok(Some(t.to_string()))
        }
    }
}

/// Equal-length comparison that does not stop at the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// [`resolve_token`] with the process environment.
pub fn resolve_token_from_env(file: Option<&Path>) -> Result<Option<String>, TokenError> {
    resolve_token(file, std::env::var(TOKEN_ENV).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_refuses_what_cannot_travel() {
        assert!(validate_token("s3cr3t-token_+/=", "x").is_ok());
        for bad in ["", "tok en", "tök", "tok\u{7}", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(validate_token(bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "\u{feff}  abc123\n").unwrap();
        assert_eq!(resolve_token(Some(&f), None).unwrap().as_deref(), Some("abc123"));
        std::fs::write(&f, "caf\u{e9}\n").unwrap();
        let e = resolve_token(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("contains the character 'é'"), "{e}");
        std::fs::write(&f, "\n").unwrap();
        assert!(resolve_token(Some(&f), None).unwrap_err().to_string().contains("is empty"));
        assert_eq!(resolve_token(None, Some(" t0k ".into())).unwrap().as_deref(), Some("t0k"));
        assert_eq!(resolve_token(None, Some("  ".into())).unwrap(), None);
        assert!(resolve_token(None, Some("a\tb".into())).is_err());
        assert!(resolve_token(Some(&dir.path().join("missing")), None).is_err());
    }
}
