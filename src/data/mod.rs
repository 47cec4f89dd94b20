//! Loading a pipeline's data: reading a CSV, Parquet or NDJSON file with polars, giving each
//! column its role (numerical feature, categorical feature, target), and fingerprinting the
//! input (SHA-256 of the bytes read, row count, schema) so a report and a model version can
//! say exactly what they were computed from.
//!
//! The bytes are hashed and parsed from the same buffer, so the fingerprint always describes
//! what was parsed. Bad input (missing file, unknown format, missing column, a text value in a
//! numerical column, no rows) is a [`DataError`] naming the file and column: it fails one step
//! of one cycle, never the daemon.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

mod config;
pub mod stream;
pub use config::{DataConfig, RawData, ReferenceSource};

pub use crate::source::Input;

/// Errors from reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source} (check data paths in the pipeline's [pipeline.data])")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unknown format; name the file .csv, .parquet, .ndjson or .jsonl")]
    Format { path: PathBuf },
    #[error("{path}: cannot parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: has no rows")]
    Empty { path: PathBuf },
    #[error(
        "{path}: column `{column}` is missing (columns present: {present}); fix the file or the pipeline's data config"
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        present: String,
    },
    #[error(
        "{path}: column `{column}` is {dtype}, expected a numerical type; list it under data.categorical or fix the file"
    )]
    NotNumeric {
        path: PathBuf,
        column: String,
        dtype: String,
    },
    #[error(
        "{path}: target column `{column}` is empty in all {nulls} rows; the reference set needs labels"
    )]
    MissingLabels {
        path: PathBuf,
        column: String,
        nulls: usize,
    },
    #[error(
        "{path}: timestamp column `{column}` has `{value}`, not a time; use RFC 3339, YYYY-MM-DD HH:MM:SS, a date, or epoch seconds"
    )]
    Timestamp {
        path: PathBuf,
        column: String,
        value: String,
    },
}

/// One file of an input, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Local path read (for a remote location, its copy in the input cache).
    pub path: String,
    pub blake3: String,
    pub bytes: u64,
}

/// What an input held when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The location as configured: a path, a glob, a URL or an s3:// key.
    pub path: String,
    /// BLAKE3 of the file's bytes (of the concatenated file hashes when there are several), hex.
    pub blake3: String,
    pub bytes: u64,
    pub rows: usize,
    /// Column names and polars dtypes, in file order.
    pub schema: Vec<(String, String)>,
    /// The files read, in order; a later step re-reads exactly these.
    #[serde(default)]
    pub files: Vec<FileDigest>,
}

impl Fingerprint {
    /// The input to re-read for this fingerprint.
    pub fn input(&self) -> Input {
        Input {
            source: self.path.clone(),
            files: if self.files.is_empty() {
                vec![PathBuf::from(&self.path)]
            } else {
                self.files.iter().map(|f| PathBuf::from(&f.path)).collect()
            },
        }
    }
}

/// Column roles of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    pub numerical: Vec<String>,
    pub categorical: Vec<String>,
    pub target: String,
    /// Column with the serving system's prediction, when the data has one.
    #[serde(default)]
    pub prediction: Option<String>,
    /// Column with each row's event time (for reference windows).
    #[serde(default)]
    pub timestamp: Option<String>,
}

impl Roles {
    /// The feature columns by kind, as Spark is asked for them.
    pub fn columns(&self) -> crate::spark::Columns<'_> {
        crate::spark::Columns {
            numerical: &self.numerical,
            categorical: &self.categorical,
        }
    }
}

/// A loaded table: feature columns by role, and the target when the file has labels.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: usize,
    /// Numerical features; nulls are NaN.
    pub numerical: Vec<(String, Vec<f64>)>,
    /// Categorical features; nulls are the empty string.
    pub categorical: Vec<(String, Vec<String>)>,
    /// Target labels as text (class names), if the column exists; "" where a row has none.
    pub target: Option<Vec<String>>,
    /// The serving system's predictions as text, if a prediction column is configured.
    pub prediction: Option<Vec<String>>,
    /// Event times (ms since the epoch), if a timestamp column is configured.
    pub timestamp: Option<Vec<Option<i64>>>,
    pub fingerprint: Fingerprint,
}

impl Table {
    /// A table of feature columns only (no labels, an empty fingerprint): for callers that
    /// build data in memory rather than reading a file.
    pub fn from_columns(
        numerical: Vec<(String, Vec<f64>)>,
        categorical: Vec<(String, Vec<String>)>,
    ) -> Table {
        let rows = numerical
            .first()
            .map(|(_, v)| v.len())
            .or_else(|| categorical.first().map(|(_, v)| v.len()))
            .unwrap_or(0);
        Table {
            rows,
            numerical,
            categorical,
            fingerprint: Fingerprint {
                rows,
                ..Fingerprint::default()
            },
            ..Table::default()
        }
    }

    pub fn numerical(&self, name: &str) -> Option<&[f64]> {
        self.numerical
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn categorical(&self, name: &str) -> Option<&[String]> {
        self.categorical
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Keep only the rows at `idx` (in that order).
    pub fn take(&self, idx: &[usize]) -> Table {
        Table {
            rows: idx.len(),
            numerical: self
                .numerical
                .iter()
                .map(|(n, v)| (n.clone(), idx.iter().map(|&i| v[i]).collect()))
                .collect(),
            categorical: self
                .categorical
                .iter()
                .map(|(n, v)| (n.clone(), idx.iter().map(|&i| v[i].clone()).collect()))
                .collect(),
            target: self
                .target
                .as_ref()
                .map(|t| idx.iter().map(|&i| t[i].clone()).collect()),
            prediction: self
                .prediction
                .as_ref()
                .map(|t| idx.iter().map(|&i| t[i].clone()).collect()),
            timestamp: self
                .timestamp
                .as_ref()
                .map(|t| idx.iter().map(|&i| t[i]).collect()),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Indices of the rows with a label.
    pub fn labelled_rows(&self) -> Vec<usize> {
        match &self.target {
            Some(t) => (0..self.rows).filter(|&i| !t[i].is_empty()).collect(),
            None => Vec::new(),
        }
    }

    /// The rows with a label (all of them when every row has one); `None` without labels.
    pub fn labelled(&self) -> Option<Table> {
        let t = self.target.as_ref()?;
        if t.iter().all(|l| !l.is_empty()) {
            return Some(self.clone());
        }
        let idx = self.labelled_rows();
        (!idx.is_empty()).then(|| self.take(&idx))
    }

    /// The rows whose timestamp lies in `[from, to)` (ms since the epoch); rows without a
    /// time are left out. Unchanged when the table has no timestamp column.
    pub fn window(&self, from: i64, to: i64) -> Table {
        let Some(ts) = &self.timestamp else {
            return self.clone();
        };
        let idx: Vec<usize> = (0..self.rows)
            .filter(|&i| ts[i].is_some_and(|t| t >= from && t < to))
            .collect();
        self.take(&idx)
    }
}

/// Read every file of an input and stack them (same columns in the same order).
fn read_frame(input: &Input) -> Result<(DataFrame, Fingerprint), DataError> {
    let mut frames = Vec::with_capacity(input.files.len());
    let mut files = Vec::with_capacity(input.files.len());
    for path in &input.files {
        let (df, digest) = read_file(path)?;
        if let Some((first, _)) = frames.first() {
            let names = |d: &DataFrame| -> Vec<String> {
                d.get_column_names().iter().map(|n| n.to_string()).collect()
            };
            if names(first) != names(&df) {
                return Err(DataError::Parse {
                    path: path.clone(),
                    message: format!(
                        "its columns ({}) differ from {}'s ({}); every file of `{}` needs the same columns",
                        names(&df).join(", "),
                        input.files[0].display(),
                        names(first).join(", "),
                        input.source
                    ),
                });
            }
        }
        frames.push((df, path.clone()));
        files.push(digest);
    }
    let mut iter = frames.into_iter();
    let (mut df, _) = iter.next().ok_or_else(|| DataError::Empty {
        path: PathBuf::from(&input.source),
    })?;
    for (next, path) in iter {
        df.vstack_mut_owned(next).map_err(|e| DataError::Parse {
            path,
            message: format!("cannot append to the files before it: {e}"),
        })?;
    }
    let (blake3, bytes) = combined_hash(&files);
    let schema = df
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().to_string()))
        .collect();
    let fingerprint = Fingerprint {
        path: input.source.clone(),
        blake3,
        bytes,
        rows: df.height(),
        schema,
        files,
    };
    Ok((df, fingerprint))
}

/// An input's hash and size: its file's, or for several the hash of their hashes in order.
fn combined_hash(files: &[FileDigest]) -> (String, u64) {
    match files {
        [one] => (one.blake3.clone(), one.bytes),
        many => {
            let mut h = blake3::Hasher::new();
            for f in many {
                h.update(f.blake3.as_bytes());
            }
            (
                h.finalize().to_hex().to_string(),
                many.iter().map(|f| f.bytes).sum(),
            )
        }
    }
}

fn read_file(path: &Path) -> Result<(DataFrame, FileDigest), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Hash on another core while the reader parses the same bytes (a big file's).
    let (blake3, parsed) = crate::par::join(
        crate::par::worth(bytes.len() / 8),
        || blake3::hash(&bytes).to_hex().to_string(),
        || parse(path, &bytes),
    );
    let digest = FileDigest {
        path: path.display().to_string(),
        blake3,
        bytes: bytes.len() as u64,
    };
    Ok((parsed?, digest))
}

/// Parse a file's bytes by its extension.
fn parse(path: &Path, bytes: &[u8]) -> Result<DataFrame, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let parse_err = |e: PolarsError| DataError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let cursor = Cursor::new(bytes);
    // A corrupt file must fail this read, not the process: the readers are third-party code
    // facing arbitrary bytes, so a panic inside them becomes a parse error too.
    let read = std::panic::AssertUnwindSafe(|| -> Result<DataFrame, DataError> {
        Ok(match ext.as_str() {
            "csv" => CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(Some(10_000))
                .into_reader_with_file_handle(cursor)
                .finish()
                .map_err(parse_err)?,
            "parquet" => ParquetReader::new(cursor)
                .read_parallel(if crate::par::worth(bytes.len() / 8) {
                    ParallelStrategy::Auto
                } else {
                    ParallelStrategy::None
                })
                .finish()
                .map_err(parse_err)?,
            "ndjson" | "jsonl" => JsonReader::new(cursor)
                .with_json_format(JsonFormat::JsonLines)
                .finish()
                .map_err(parse_err)?,
            _ => {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                });
            }
        })
    });
    std::panic::catch_unwind(read).map_err(|panic| DataError::Parse {
        path: path.to_path_buf(),
        message: format!(
            "the reader gave up on this file ({}); is it truncated or not the format its name says?",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message")
        ),
    })?
}

/// Infer column roles from a file's schema where the config does not list them: numeric
/// columns are numerical features, text and boolean columns categorical; the target, the
/// prediction, the timestamp and the ignored columns are left out.
pub fn infer_roles(fingerprint: &Fingerprint, spec: &RoleSpec<'_>) -> Roles {
    let skip = |n: &str| {
        n == spec.target
            || spec.prediction == Some(n)
            || spec.timestamp == Some(n)
            || spec.ignore.iter().any(|i| i == n)
    };
    let is_numeric = |dtype: &str| {
        [
            "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64",
        ]
        .contains(&dtype)
    };
    let listed = |l: Option<&[String]>| l.map(<[String]>::to_vec);
    let numerical = listed(spec.numerical).unwrap_or_else(|| {
        fingerprint
            .schema
            .iter()
            .filter(|(n, t)| {
                !skip(n) && is_numeric(t) && !spec.categorical.is_some_and(|c| c.contains(n))
            })
            .map(|(n, _)| n.clone())
            .collect()
    });
    let categorical = listed(spec.categorical).unwrap_or_else(|| {
        fingerprint
            .schema
            .iter()
            .filter(|(n, t)| !skip(n) && !is_numeric(t) && !numerical.contains(n))
            .map(|(n, _)| n.clone())
            .collect()
    });
    Roles {
        numerical,
        categorical,
        target: spec.target.to_string(),
        prediction: spec.prediction.map(str::to_string),
        timestamp: spec.timestamp.map(str::to_string),
    }
}

/// What the configuration says about column roles; unlisted feature roles are inferred.
#[derive(Debug, Clone, Default)]
pub struct RoleSpec<'a> {
    pub numerical: Option<&'a [String]>,
    pub categorical: Option<&'a [String]>,
    pub target: &'a str,
    pub prediction: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub ignore: &'a [String],
}

/// Read an input once, infer the roles `spec` leaves open from its schema, and extract them.
pub fn load_inferred(
    input: &Input,
    spec: &RoleSpec<'_>,
    require_target: bool,
) -> Result<(Roles, Table), DataError> {
    let (df, fingerprint) = read_frame(input)?;
    let roles = infer_roles(&fingerprint, spec);
    let table = extract(input, df, fingerprint, &roles, require_target)?;
    Ok((roles, table))
}

/// Read an input and extract the columns of `roles`. `require_target` makes a missing target
/// column an error; otherwise the table simply has no labels.
pub fn load(input: &Input, roles: &Roles, require_target: bool) -> Result<Table, DataError> {
    let (df, fingerprint) = read_frame(input)?;
    extract(input, df, fingerprint, roles, require_target)
}

/// Load a reference (inferring the roles `spec` leaves open) and a current window with the
/// reference's roles. One after the other: each read is parallel inside (parsing on polars'
/// pool, hashing beside it), and reading both at once would hold both raw files and both
/// frames in memory together for a few percent of speed.
pub fn load_pair(
    reference: &Input,
    current: &Input,
    spec: &RoleSpec<'_>,
) -> Result<(Roles, Table, Table), DataError> {
    let (roles, r) = load_inferred(reference, spec, false)?;
    let c = load(current, &roles, false)?;
    Ok((roles, r, c))
}

/// File formats retraind writes tables in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    #[default]
    Parquet,
    Csv,
}

impl TableFormat {
    pub fn extension(self) -> &'static str {
        match self {
            TableFormat::Parquet => "parquet",
            TableFormat::Csv => "csv",
        }
    }
}

/// A file with one column per role (features, target, prediction), as parquet: how a
/// model version keeps the exact rows it was trained on.
pub fn write_parquet(table: &Table, roles: &Roles, path: &Path) -> Result<(), DataError> {
    write_table(table, roles, path, TableFormat::Parquet)
}

/// Write the role columns of `table` to `path` atomically, in `format`.
pub fn write_table(
    table: &Table,
    roles: &Roles,
    path: &Path,
    format: TableFormat,
) -> Result<(), DataError> {
    let err = |e: PolarsError| DataError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut columns: Vec<Column> = Vec::new();
    for (name, v) in &table.numerical {
        columns.push(Column::new(name.as_str().into(), v.as_slice()));
    }
    // Text columns go back to the type they were read as (integers, booleans), so a target
    // read as i64 is written as i64 and the next check sees the same schema.
    let dtype = |name: &str| {
        table
            .fingerprint
            .schema
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    };
    let text = |name: &str, v: &[String]| -> Column {
        let filled = || v.iter().filter(|s| !s.is_empty());
        // The type the column had when read; "007" read as text stays text.
        let was = dtype(name);
        let integer = was.is_some_and(|t| t.starts_with('i') || t.starts_with('u'));
        let float = was.is_some_and(|t| t.starts_with('f'));
        let boolean = was == Some("bool");
        if integer && filled().all(|s| s.parse::<i64>().is_ok()) {
            let ints: Vec<Option<i64>> = v.iter().map(|s| s.parse().ok()).collect();
            return Column::new(name.into(), ints);
        }
        // A regressor's numeric target (text in the table) goes back to a float.
        if float && filled().all(|s| s.parse::<f64>().is_ok()) {
            let floats: Vec<Option<f64>> = v.iter().map(|s| s.parse().ok()).collect();
            return Column::new(name.into(), floats);
        }
        if boolean && filled().all(|s| s == "true" || s == "false") {
            let bools: Vec<Option<bool>> = v.iter().map(|s| s.parse().ok()).collect();
            return Column::new(name.into(), bools);
        }
        let opt: Vec<Option<&str>> = v
            .iter()
            .map(|s| (!s.is_empty()).then_some(s.as_str()))
            .collect();
        Column::new(name.into(), opt)
    };
    for (name, v) in &table.categorical {
        columns.push(text(name, v));
    }
    if let Some(t) = &table.target {
        columns.push(text(&roles.target, t));
    }
    if let (Some(p), Some(name)) = (&table.prediction, &roles.prediction) {
        columns.push(text(name, p));
    }
    let mut df = DataFrame::new_infer_height(columns).map_err(err)?;
    let mut buf = Vec::new();
    match format {
        TableFormat::Parquet => {
            ParquetWriter::new(&mut buf).finish(&mut df).map_err(err)?;
        }
        TableFormat::Csv => {
            CsvWriter::new(&mut buf).finish(&mut df).map_err(err)?;
        }
    }
    crate::artifacts::write_atomic(path, &buf).map_err(|e| DataError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Pull the role columns out of `df`. Numerical columns are moved out one at a time and
/// dropped once copied, so a table never holds the frame and its copy in full at once.
fn extract(
    input: &Input,
    mut df: DataFrame,
    fingerprint: Fingerprint,
    roles: &Roles,
    require_target: bool,
) -> Result<Table, DataError> {
    let path = Path::new(&input.source);
    let rows = df.height();
    if rows == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let present = fingerprint
        .schema
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let missing = |name: &str| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: name.to_string(),
        present: present.clone(),
    };
    let parse_err = |e: PolarsError| DataError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // Move the numerical columns out of the frame, then convert them on all cores; each
    // polars column is freed as soon as its copy exists.
    let mut owned = Vec::with_capacity(roles.numerical.len());
    for name in &roles.numerical {
        owned.push((name, df.drop_in_place(name).map_err(|_| missing(name))?));
    }
    let numeric = |(name, c): (&String, Column)| -> Result<(String, Vec<f64>), DataError> {
        Ok((name.clone(), to_f64(path, name, c)?))
    };
    let parallel = crate::par::worth(df.height() * owned.len());
    let numerical = crate::par::try_map(owned, parallel, numeric)?;
    let df = df;
    let column = |name: &str| df.column(name).map_err(|_| missing(name));
    let as_text = |c: &Column| -> Result<Vec<String>, DataError> {
        let s = c.cast(&DataType::String).map_err(parse_err)?;
        let s = s.str().map_err(parse_err)?;
        Ok(s.iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let mut categorical = Vec::with_capacity(roles.categorical.len());
    for name in &roles.categorical {
        categorical.push((name.clone(), as_text(column(name)?)?));
    }
    // Rows without a label are unlabelled, not an error: drift needs no labels, and the
    // performance check and training use the labelled rows only (`Table::labelled`).
    let target = match df.column(&roles.target) {
        Ok(c) if require_target && c.null_count() == c.len() => {
            return Err(DataError::MissingLabels {
                path: path.to_path_buf(),
                column: roles.target.clone(),
                nulls: c.len(),
            });
        }
        Ok(c) => Some(as_text(c)?),
        Err(_) if !require_target => None,
        Err(_) => return Err(missing(&roles.target)),
    };
    let prediction = match &roles.prediction {
        Some(name) => match df.column(name) {
            Ok(c) => Some(as_text(c)?),
            Err(_) => None,
        },
        None => None,
    };
    let timestamp = match &roles.timestamp {
        // Absent (e.g. from a champion's stored training rows): no times, no window.
        Some(name) => match df.column(name) {
            Ok(c) => Some(timestamps(path, name, c)?),
            Err(_) => None,
        },
        None => None,
    };
    Ok(Table {
        rows,
        numerical,
        categorical,
        target,
        prediction,
        timestamp,
        fingerprint,
    })
}

/// A numerical feature column as doubles (missing: NaN); a non-numeric column is refused
/// naming the file and the column.
fn to_f64(path: &Path, name: &str, c: Column) -> Result<Vec<f64>, DataError> {
    let parse_err = |e: PolarsError| DataError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if c.null_count() == c.len() {
        // Entirely empty: a column of missing values (the quality gate reports it),
        // whatever type the reader guessed for it.
        return Ok(vec![f64::NAN; c.len()]);
    }
    if !c.dtype().is_primitive_numeric() {
        return Err(DataError::NotNumeric {
            path: path.to_path_buf(),
            column: name.to_string(),
            dtype: c.dtype().to_string(),
        });
    }
    let f = c.cast(&DataType::Float64).map_err(parse_err)?;
    drop(c);
    let f = f.f64().map_err(parse_err)?;
    let values = if f.null_count() == 0 {
        // The common case: a straight copy of the chunks.
        f.into_no_null_iter().collect()
    } else {
        f.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
    };
    Ok(values)
}

/// A timestamp column as milliseconds since the epoch: a polars date/datetime, an integer
/// (seconds since the epoch), or text in RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD`.
/// Empty cells are `None`.
fn timestamps(path: &Path, name: &str, c: &Column) -> Result<Vec<Option<i64>>, DataError> {
    let bad = |value: String| DataError::Timestamp {
        path: path.to_path_buf(),
        column: name.to_string(),
        value,
    };
    let parse_err = |e: PolarsError| bad(e.to_string());
    match c.dtype() {
        DataType::Date | DataType::Datetime(_, _) => {
            let ms = c
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
                .map_err(parse_err)?;
            let ms = ms.cast(&DataType::Int64).map_err(parse_err)?;
            Ok(ms.i64().map_err(parse_err)?.iter().collect())
        }
        t if t.is_integer() => {
            let s = c.cast(&DataType::Int64).map_err(parse_err)?;
            Ok(s.i64()
                .map_err(parse_err)?
                .iter()
                .map(|v| v.map(|s| s.saturating_mul(1000)))
                .collect())
        }
        DataType::String => {
            let s = c.str().map_err(parse_err)?;
            s.iter()
                .map(|v| match v {
                    None | Some("") => Ok(None),
                    Some(t) => parse_timestamp(t)
                        .map(Some)
                        .ok_or_else(|| bad(t.to_string())),
                })
                .collect()
        }
        other => Err(bad(format!("a column of type {other}"))),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time, `YYYY-MM-DD HH:MM:SS` (UTC) or a date.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_csv_infers_roles_and_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.csv", "a,b,seg,target\n1,2.5,x,0\n2,,y,1\n");
        let spec = RoleSpec {
            target: "target",
            ..RoleSpec::default()
        };
        let (roles, t) = load_inferred(&Input::file(&p), &spec, true).unwrap();
        assert_eq!(t.fingerprint.rows, 2);
        assert_eq!(t.fingerprint.blake3.len(), 64);
        assert_eq!(roles.numerical, vec!["a", "b"]);
        assert_eq!(roles.categorical, vec!["seg"]);
        assert_eq!(
            load(&Input::file(&p), &roles, true).unwrap().fingerprint,
            t.fingerprint
        );
        assert_eq!(t.numerical("a").unwrap(), &[1.0, 2.0]);
        assert!(t.numerical("b").unwrap()[1].is_nan());
        assert_eq!(
            t.categorical("seg").unwrap(),
            &["x".to_string(), "y".to_string()]
        );
        assert_eq!(
            t.target.as_deref().unwrap(),
            &["0".to_string(), "1".to_string()]
        );
    }

    /// Rows written back (a model's training rows) read back with their text columns' types:
    /// a float target stays a float (a regressor's), integer codes integers. (Numerical
    /// features come back as f64, the same type class for the quality check.)
    #[test]
    fn written_rows_keep_their_column_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.csv", "a,code,target\n1,7,12.5\n2,11,-0.25\n");
        let spec = RoleSpec {
            target: "target",
            categorical: Some(&["code".to_string()]),
            ..RoleSpec::default()
        };
        let (roles, t) = load_inferred(&Input::file(&p), &spec, true).unwrap();
        let out = dir.path().join("rows.parquet");
        write_parquet(&t, &roles, &out).unwrap();
        let back = load(&Input::file(&out), &roles, true).unwrap();
        let type_of = |t: &Table, c: &str| {
            t.fingerprint
                .schema
                .iter()
                .find(|(n, _)| n == c)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(type_of(&back, "target"), "f64");
        assert_eq!(type_of(&back, "code"), "i64");
        assert_eq!(back.target, t.target);
    }

    #[test]
    fn bad_inputs_name_the_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let roles = Roles {
            numerical: vec!["a".into()],
            categorical: vec![],
            target: "target".into(),
            prediction: None,
            timestamp: None,
        };
        let missing = load(&Input::file(&dir.path().join("nope.csv")), &roles, true).unwrap_err();
        assert!(missing.to_string().contains("nope.csv"), "{missing}");
        let p = write(dir.path(), "x.txt", "a\n1\n");
        assert!(matches!(
            load(&Input::file(&p), &roles, true),
            Err(DataError::Format { .. })
        ));
        let p = write(dir.path(), "c.csv", "b,target\n1,0\n");
        let e = load(&Input::file(&p), &roles, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a` is missing") && e.contains("c.csv"), "{e}");
        let p = write(dir.path(), "t.csv", "a,target\nfoo,0\n");
        assert!(matches!(
            load(&Input::file(&p), &roles, true),
            Err(DataError::NotNumeric { .. })
        ));
        let p = write(dir.path(), "e.csv", "a,target\n");
        assert!(matches!(
            load(&Input::file(&p), &roles, true),
            Err(DataError::Empty { .. })
        ));
        let p = write(dir.path(), "u.csv", "a\n1\n");
        assert!(
            load(&Input::file(&p), &roles, false)
                .unwrap()
                .target
                .is_none()
        );
        assert!(matches!(
            load(&Input::file(&p), &roles, true),
            Err(DataError::MissingColumn { .. })
        ));
    }

    #[test]
    fn timestamps_cut_a_reference_window_and_labels_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "w.csv",
            "a,ts,target\n1,2026-01-01,0\n2,2026-01-15T10:00:00Z,\n3,2026-02-01 00:00:00,1\n4,,1\n",
        );
        let spec = RoleSpec {
            target: "target",
            timestamp: Some("ts"),
            ..RoleSpec::default()
        };
        let (roles, t) = load_inferred(&Input::file(&p), &spec, true).unwrap();
        assert_eq!(roles.numerical, vec!["a"], "the timestamp is not a feature");
        assert_eq!(t.labelled_rows(), vec![0, 2, 3]);
        assert_eq!(t.labelled().unwrap().rows, 3);
        let from = parse_timestamp("2026-01-01").unwrap();
        let to = parse_timestamp("2026-02-01").unwrap();
        // [from, to): the first two rows; the row without a time is left out.
        assert_eq!(t.window(from, to).numerical("a").unwrap(), &[1.0, 2.0]);
        let bad = write(dir.path(), "b.csv", "a,ts,target\n1,yesterday,0\n");
        let e = load(&Input::file(&bad), &roles, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`yesterday`") && e.contains("RFC 3339"), "{e}");
        // A reference whose labels are all empty cannot train anything.
        let none = write(dir.path(), "n.csv", "a,ts,target\n1,2026-01-01,\n");
        assert!(matches!(
            load(&Input::file(&none), &roles, true),
            Err(DataError::MissingLabels { .. })
        ));
    }
}
