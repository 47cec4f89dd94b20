//! Secrets (the API token now; Slack, webhook and KFP tokens later): where they come from and
//! a wrapper that never prints its contents.
//!
//! A secret is read from a file (systemd `LoadCredential=` puts files under
//! `$CREDENTIALS_DIRECTORY`) or an environment variable, trimmed of surrounding whitespace,
//! and held in [`Secret`], whose `Debug` and `Display` print `***`. Errors name the source,
//! never the value.

use std::fmt;
use std::path::PathBuf;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cannot read secret file {path}: {source} (check the path and that the daemon's user may read it)"
    )]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set (export it, or use a token file instead)")]
    Env(String),
    #[error("secret from {0} is empty (write the token into it)")]
    Empty(String),
}

/// A secret value. Compares in constant time; prints as `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Read the secret from its source.
    pub fn load(source: &SecretSource) -> Result<Secret, SecretError> {
        let (value, name) = match source {
            SecretSource::File(path) => (
                std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    source: e,
                })?,
                path.display().to_string(),
            ),
            SecretSource::Env(var) => (
                std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
                format!("${var}"),
            ),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(SecretError::Empty(name));
        }
        Ok(Secret(value))
    }

    /// Wrap a value already in memory (tests, the demo).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compare two byte strings without an early exit on the first difference. The length is not
/// secret (tokens have a fixed format), the contents are.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter"));
    }

    #[test]
    fn reads_and_trims_files_and_names_missing_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc\n").unwrap();
        assert!(
            Secret::load(&SecretSource::File(path.clone()))
                .unwrap()
                .matches("abc")
        );
        std::fs::write(&path, "\n").unwrap();
        let e = Secret::load(&SecretSource::File(path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = Secret::load(&SecretSource::Env("RETRAIND_TEST_SURELY_UNSET".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RETRAIND_TEST_SURELY_UNSET"), "{e}");
    }
}
