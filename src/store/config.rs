//! `[store]`: which database holds the daemon's state — raw shape, defaults and validation,
//! and the redaction of its URL for logs.

use std::path::Path;

use serde::Deserialize;

use crate::validate::Checker;

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    pub url: Option<String>,
    pub max_connections: Option<i64>,
}

/// The store's settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://…` or `postgres://…`. May embed a password: never log it (see `redacted_url`).
    pub url: String,
    pub max_connections: u32,
}

const MAX_CONNECTIONS: usize = 5;

impl StoreConfig {
    /// The URL with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Validate `raw` (the checker is at `store`); the default is a SQLite file in the state
    /// directory.
    pub fn from_raw(raw: RawStore, state_dir: &Path, c: &mut Checker) -> StoreConfig {
        let default_url = format!("sqlite://{}", state_dir.join("retraind.db").display());
        let url = raw.url.unwrap_or(default_url);
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            c.problem(
                "url",
                format!("`{}` is not a supported store; use sqlite:///path/to/retraind.db or postgres://user@host/db", redact_url(&url)),
            );
        }
        StoreConfig {
            url,
            max_connections: c.positive(
                "max_connections",
                raw.max_connections,
                MAX_CONNECTIONS,
                100,
            ) as u32,
        }
    }
}

/// Replace the password in `scheme://user:password@host/...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_passwords() {
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }
}
