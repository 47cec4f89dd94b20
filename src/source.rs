//! Where a pipeline's data comes from: a local file, a glob of files, an HTTP(S) URL or an
//! S3-compatible object (`s3://bucket/key`). Resolving a [`Location`] yields the local files
//! to parse, in a fixed order.
//!
//! Remote objects are downloaded once into a content-addressed cache in the state directory
//! (`<state>/inputs/<blake3>.<ext>`), so the later steps of a cycle (check, train, evaluate)
//! read exactly the bytes the load step fingerprinted, without fetching them again, and a
//! model's lineage keeps pointing at data that still exists. S3 credentials come from the
//! standard AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`) or from files named in the config;
//! they never appear in errors or fingerprints.

use crate::validate::Checker;
use crate::validate::files::Files;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::{ObjectStoreExt, path::Path as ObjectPath};

/// Errors from resolving or fetching a data location.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{pattern}` matches no file; check the path or glob in [pipeline.data]")]
    NoMatch { pattern: String },
    #[error("`{pattern}` is not a valid glob: {message}")]
    BadGlob { pattern: String, message: String },
    #[error("`{location}` is not a supported location: {message}")]
    BadLocation { location: String, message: String },
    #[error(
        "cannot fetch {location}: {message} (check the URL, the network and, for s3://, [pipeline.data.s3] or the AWS_* variables)"
    )]
    Fetch { location: String, message: String },
    #[error("cannot write the input cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Settings for `s3://` locations; unset fields fall back to the AWS environment variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Config {
    /// Endpoint of an S3-compatible service (MinIO, Ceph, R2 …); default AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints (a local MinIO); default false.
    pub allow_http: bool,
    /// Files holding the access key id and secret (e.g. systemd credentials).
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    /// PEM file of an extra CA to trust (a private endpoint's certificate).
    pub ca_file: Option<PathBuf>,
}

/// `[pipeline.data.s3]` as written.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
    pub access_key_id_file: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub ca_file: Option<String>,
}

impl S3Config {
    /// Validate `raw` (the checker is at `pipeline[i].data.s3`): named files must exist.
    pub fn from_raw(raw: RawS3, files: Files, c: &mut Checker) -> S3Config {
        S3Config {
            access_key_id_file: files.file(c, "access_key_id_file", &raw.access_key_id_file),
            secret_access_key_file: files.file(
                c,
                "secret_access_key_file",
                &raw.secret_access_key_file,
            ),
            ca_file: files.file(c, "ca_file", &raw.ca_file),
            endpoint: raw.endpoint,
            region: raw.region,
            allow_http: raw.allow_http.unwrap_or(false),
        }
    }
}

/// One configured data location, after `{date}` substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Glob(String),
    Http(String),
    S3 { bucket: String, key: String },
}

impl Location {
    /// Classify a location string; relative file paths and globs resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Location, SourceError> {
        let bad = |message: &str| SourceError::BadLocation {
            location: text.to_string(),
            message: message.to_string(),
        };
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| bad("write it as s3://bucket/key"))?;
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            let url = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
            if url.path().len() <= 1 {
                return Err(bad("the URL names no file"));
            }
            return Ok(Location::Http(text.to_string()));
        }
        if text.contains("://") {
            return Err(bad(
                "use a file path, a glob, an http(s):// URL or an s3://bucket/key",
            ));
        }
        let path = if Path::new(text).is_absolute() {
            PathBuf::from(text)
        } else {
            base.join(text)
        };
        let s = path.to_string_lossy().into_owned();
        if s.contains(['*', '?', '[']) {
            Ok(Location::Glob(s))
        } else {
            Ok(Location::File(path))
        }
    }

    /// The location as a person wrote it (for reports and errors).
    pub fn describe(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Glob(g) => g.clone(),
            Location::Http(u) => redact_url(u),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Http(_) | Location::S3 { .. })
    }

    /// Whether a local location exists now (config validation; remote ones are not probed).
    pub fn exists_locally(&self) -> bool {
        match self {
            Location::File(p) => p.is_file(),
            Location::Glob(g) => glob::glob(g)
                .map(|mut it| it.any(|e| e.is_ok_and(|p| p.is_file())))
                .unwrap_or(false),
            _ => true,
        }
    }
}

/// A URL without its user:password and query string (signed URLs carry tokens there), for
/// reports, fingerprints, logs and errors.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            format!("{u}{}", if had_query { "?…" } else { "" })
        }
        Err(_) => "(unparseable URL)".to_string(),
    }
}

/// The local files behind a location, in order, with what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub source: String,
    pub files: Vec<PathBuf>,
}

impl Input {
    /// A single local file.
    pub fn file(path: &Path) -> Input {
        Input {
            source: path.display().to_string(),
            files: vec![path.to_path_buf()],
        }
    }
}

/// Resolve a location to local files: a file as is, a glob expanded and sorted, a remote
/// object downloaded into `cache_dir` (content-addressed; a second fetch of the same bytes
/// reuses the file). Blocking.
pub fn resolve(location: &Location, cache_dir: &Path, s3: &S3Config) -> Result<Input, SourceError> {
    let source = location.describe();
    let files = match location {
        Location::File(p) => vec![p.clone()],
        Location::Glob(pattern) => {
            let paths = glob::glob(pattern).map_err(|e| SourceError::BadGlob {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
            let mut files: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SourceError::NoMatch {
                    pattern: pattern.clone(),
                });
            }
            files
        }
        Location::Http(_) | Location::S3 { .. } => {
            let bytes = fetch(location, s3)?;
            vec![cache(cache_dir, &source, &bytes)?]
        }
    };
    Ok(Input { source, files })
}

/// File extension of a location's last segment (the format), lowercased.
fn extension(location: &str) -> String {
    let last = location
        .split(['?', '#'])
        .next()
        .unwrap_or(location)
        .rsplit('/')
        .next()
        .unwrap_or_default();
    Path::new(last)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

fn cache(dir: &Path, source: &str, bytes: &[u8]) -> Result<PathBuf, SourceError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Cache { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let hash = blake3::hash(bytes).to_hex().to_string();
    let path = dir.join(format!("{hash}.{}", extension(source)));
    if path.is_file() {
        return Ok(path);
    }
    crate::artifacts::write_atomic(&path, bytes).map_err(|e| SourceError::Cache {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(path)
}

fn read_secret_file(path: &Path, location: &str) -> Result<String, SourceError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| SourceError::Fetch {
            location: location.to_string(),
            message: format!("cannot read credential file {}: {e}", path.display()),
        })
}

fn client_options(
    s3: &S3Config,
    location: &str,
) -> Result<object_store::ClientOptions, SourceError> {
    let mut options = object_store::ClientOptions::new()
        .with_timeout(Duration::from_secs(300))
        .with_connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &s3.ca_file {
        let certs =
            crate::http::object_store_certificates(ca).map_err(|message| SourceError::Fetch {
                location: location.to_string(),
                message,
            })?;
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    Ok(options)
}

/// Run a future to completion from blocking code, whatever the calling thread is: on a plain
/// thread with a small runtime of its own; from a thread that is inside a runtime (the
/// blocking pool, or a `block_on` already) on a scoped helper thread, because tokio refuses
/// to nest `block_on`.
pub fn block_on<T: Send>(fut: impl std::future::Future<Output = T> + Send) -> std::io::Result<T> {
    let run = move || -> std::io::Result<T> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(fut))
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .map_err(|_| std::io::Error::other("the download thread panicked"))?
        })
    } else {
        run()
    }
}

fn s3_store(
    bucket: &str,
    s3: &S3Config,
    describe: &str,
) -> Result<object_store::aws::AmazonS3, SourceError> {
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(client_options(s3, describe)?)
        .with_allow_http(s3.allow_http);
    if let Some(e) = &s3.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &s3.region {
        b = b.with_region(r);
    }
    if let Some(f) = &s3.access_key_id_file {
        b = b.with_access_key_id(read_secret_file(f, describe)?);
    }
    if let Some(f) = &s3.secret_access_key_file {
        b = b.with_secret_access_key(read_secret_file(f, describe)?);
    }
    b.build().map_err(|e| SourceError::Fetch {
        location: describe.to_string(),
        message: e.to_string(),
    })
}

/// Download one remote object's bytes. Blocking.
fn fetch(location: &Location, s3: &S3Config) -> Result<Vec<u8>, SourceError> {
    let describe = location.describe();
    let fail = |message: String| SourceError::Fetch {
        location: describe.clone(),
        message,
    };
    let result = match location {
        Location::Http(url) => {
            let client = crate::http::client(Duration::from_secs(300), s3.ca_file.as_deref())
                .map_err(fail)?;
            let url = url.clone();
            block_on(async move {
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| crate::http::describe(e, Some("data.s3.ca_file")))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("the server answered {status}"));
                }
                resp.bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| crate::http::describe(e, Some("data.s3.ca_file")))
            })
        }
        Location::S3 { bucket, key } => {
            let store = s3_store(bucket, s3, &describe)?;
            let path = ObjectPath::parse(key).map_err(|e| fail(e.to_string()))?;
            block_on(async move {
                let got = store.get(&path).await.map_err(|e| e.to_string())?;
                got.bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| e.to_string())
            })
        }
        _ => return Err(fail("not a remote location".into())),
    };
    result.map_err(|e| fail(e.to_string()))?.map_err(fail)
}

/// Write `bytes` to a location: a local file (atomically) or an S3 object. Blocking. HTTP
/// locations are read-only.
pub fn put(location: &Location, bytes: Vec<u8>, s3: &S3Config) -> Result<(), SourceError> {
    let describe = location.describe();
    let fail = |message: String| SourceError::Fetch {
        location: describe.clone(),
        message,
    };
    match location {
        Location::File(path) => {
            crate::artifacts::write_atomic(path, &bytes).map_err(|e| fail(e.to_string()))
        }
        Location::S3 { bucket, key } => {
            let store = s3_store(bucket, s3, &describe)?;
            let path = ObjectPath::parse(key.as_str()).map_err(|e| fail(e.to_string()))?;
            block_on(async move {
                store
                    .put(&path, bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| fail(e.to_string()))?
            .map_err(fail)
        }
        _ => Err(fail(
            "cannot write there; use a local path or s3://bucket/prefix".into(),
        )),
    }
}

/// The md5 a DVC-tracked file's neighbouring `<file>.dvc` records (`outs: - md5: …`), when
/// there is one: lineage that ties a model to the user's data versioning.
pub fn dvc_md5(path: &str) -> Option<String> {
    if path.contains("://") {
        return None;
    }
    let text = std::fs::read_to_string(format!("{path}.dvc")).ok()?;
    text.lines().find_map(|l| {
        let v = l.trim().trim_start_matches("- ").strip_prefix("md5:")?;
        Some(v.trim().trim_matches(['"', '\'']).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_locations() {
        let base = Path::new("/etc/retraind");
        assert_eq!(
            Location::parse("data/ref.csv", base).unwrap(),
            Location::File(PathBuf::from("/etc/retraind/data/ref.csv"))
        );
        assert_eq!(
            Location::parse("/d/2026-*/part-*.parquet", base).unwrap(),
            Location::Glob("/d/2026-*/part-*.parquet".into())
        );
        assert_eq!(
            Location::parse("s3://bkt/a/b.parquet", base).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                key: "a/b.parquet".into()
            }
        );
        assert!(matches!(
            Location::parse("https://h/x.csv", base).unwrap(),
            Location::Http(_)
        ));
        for bad in ["s3://bucket", "s3:///key", "ftp://h/x.csv", "https://host/"] {
            assert!(Location::parse(bad, base).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_expand_sorted_and_empty_globs_fail() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(n), "x\n1\n").unwrap();
        }
        let loc = Location::parse("*.csv", dir.path()).unwrap();
        let input = resolve(&loc, dir.path(), &S3Config::default()).unwrap();
        let names: Vec<_> = input
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.csv", "b.csv"]);
        let none = Location::parse("*.parquet", dir.path()).unwrap();
        let e = resolve(&none, dir.path(), &S3Config::default()).unwrap_err();
        assert!(e.to_string().contains("matches no file"), "{e}");
    }

    #[test]
    fn dvc_files_give_their_md5() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("train.csv");
        std::fs::write(&data, "a\n1\n").unwrap();
        let path = data.display().to_string();
        assert_eq!(dvc_md5(&path), None);
        std::fs::write(
            dir.path().join("train.csv.dvc"),
            "outs:\n- md5: 3f0b3e8d1b2a9c4e5f60718293a4b5c6\n  size: 4\n  path: train.csv\n",
        )
        .unwrap();
        assert_eq!(
            dvc_md5(&path).as_deref(),
            Some("3f0b3e8d1b2a9c4e5f60718293a4b5c6")
        );
    }

    #[test]
    fn urls_are_described_without_credentials() {
        let l = Location::parse(
            "https://u:secret@h/d/x.csv?X-Amz-Signature=abc",
            Path::new("/"),
        )
        .unwrap();
        let d = l.describe();
        assert!(!d.contains("secret") && !d.contains("abc"), "{d}");
        assert!(d.starts_with("https://h/d/x.csv"), "{d}");
    }

    #[test]
    fn extension_ignores_query_strings() {
        assert_eq!(extension("https://h/d/x.Parquet?sig=1"), "parquet");
        assert_eq!(extension("s3://b/k/day.csv"), "csv");
    }
}
