//! Configuration checks that look at the file system: relative paths resolved against the
//! config file's folder, files and folders that must exist, and where a secret comes from
//! (`<key>_file`, `<key>_env`, or a systemd credential). The secret's contents are never
//! read here ([`crate::secret`] reads them when a part is built).

use std::path::{Path, PathBuf};

use super::Checker;
use crate::secret::SecretSource;

/// Reads an environment variable (the real environment, or a test's).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where relative paths start and how the environment is read.
#[derive(Clone, Copy)]
pub struct Files<'a> {
    /// The config file's folder, absolute.
    pub base: &'a Path,
    pub env: EnvLookup<'a>,
}

impl Files<'_> {
    /// `p` against the config file's folder, unless absolute.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    /// An optional file that must exist when named.
    pub fn file(&self, c: &mut Checker, key: &str, raw: &Option<String>) -> Option<PathBuf> {
        let path = self.resolve(raw.as_deref()?);
        if !path.is_file() {
            c.problem(key, format!("file {} does not exist", path.display()));
        }
        Some(path)
    }

    /// A working directory (default: the config file's folder) that must exist.
    pub fn workdir(&self, c: &mut Checker, key: &str, raw: &Option<String>) -> PathBuf {
        let dir = raw
            .as_deref()
            .map(|w| self.resolve(w))
            .unwrap_or_else(|| self.base.to_path_buf());
        if !dir.is_dir() {
            c.problem(key, format!("{} is not a directory", dir.display()));
        }
        dir
    }

    /// A secret named by `<key>_file` or `<key>_env` (`key` relative to the checker's
    /// section, without the suffix); else `$CREDENTIALS_DIRECTORY/<credential>` when systemd
    /// passed one.
    pub fn secret(
        &self,
        c: &mut Checker,
        key: &str,
        file: &Option<String>,
        var: &Option<String>,
        credential: Option<&str>,
    ) -> Option<SecretSource> {
        let full = c.key(key);
        match (file, var) {
            (Some(_), Some(_)) => {
                c.problem(
                    &format!("{key}_file"),
                    format!("set either {full}_file or {full}_env, not both"),
                );
                None
            }
            (Some(f), None) => {
                let path = self.resolve(f);
                if !path.is_file() {
                    c.problem(
                        &format!("{key}_file"),
                        format!(
                            "file {} does not exist; create it (mode 0600) holding the secret",
                            path.display()
                        ),
                    );
                }
                Some(SecretSource::File(path))
            }
            (None, Some(v)) => Some(SecretSource::Env(v.clone())),
            (None, None) => credential.and_then(|name| {
                (self.env)("CREDENTIALS_DIRECTORY")
                    .map(|dir| Path::new(&dir).join(name))
                    .filter(|p| p.is_file())
                    .map(SecretSource::File)
            }),
        }
    }
}
