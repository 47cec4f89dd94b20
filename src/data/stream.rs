//! Reading an input in bounded memory, into a [`Profile`]: Parquet by row group and column
//! projection, CSV and NDJSON in blocks of whole lines; each batch's feature columns are
//! pushed into the profile's accumulators (on all cores, one feature per task) and dropped.
//! A [`Plan`] made from a memory budget bounds what is held at once — the batch being
//! decoded, plus every feature's exact values up to a per-feature limit, plus one sketch per
//! feature — whatever the number of rows. Every file's bytes are hashed for the fingerprint
//! on a thread beside the reader.
//!
//! A CSV block ends at a line break, so a quoted field holding a line break at a block's
//! edge fails the read with the file named (use Parquet for such data); blocks are 8 MiB to
//! 64 MiB.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::io::parquet::metadata::FileMetadataRef;
use polars::prelude::*;
use rayon::prelude::*;

use super::{DataError, FileDigest, Fingerprint, Input, RoleSpec, Roles, infer_roles, to_f64};
use crate::profile::{Expectation, Options, Profile, ProfileBuilder};

/// How much to hold at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Bytes for everything a check of two sides holds.
    pub budget: u64,
    /// Rank error of the sketches.
    pub epsilon: f64,
    /// Exact values per feature at most, whatever the budget (a profile to be stored keeps
    /// few, so it stays small).
    pub exact_cap: usize,
}

/// `[pipeline.check]` as written.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawCheck {
    pub memory_budget: Option<String>,
    pub epsilon: Option<f64>,
}

/// The default memory budget of a check.
pub const DEFAULT_BUDGET: u64 = 2 << 30;
/// The smallest budget accepted.
pub const MIN_BUDGET: u64 = 16 << 20;

impl Plan {
    /// Validate `[pipeline.check]` (the checker is at `pipeline[i].check`).
    pub fn from_raw(raw: RawCheck, c: &mut crate::validate::Checker) -> Plan {
        let budget = match raw
            .memory_budget
            .as_deref()
            .map(crate::validate::parse_bytes)
        {
            None => DEFAULT_BUDGET,
            Some(Ok(b)) if b >= MIN_BUDGET => b,
            Some(Ok(b)) => {
                c.problem(
                    "memory_budget",
                    format!("{b} bytes is too small; give at least 16MiB"),
                );
                DEFAULT_BUDGET
            }
            Some(Err(e)) => {
                c.problem("memory_budget", e);
                DEFAULT_BUDGET
            }
        };
        let (lo, hi) = crate::profile::sketch::EPSILON_RANGE;
        let epsilon = raw
            .epsilon
            .unwrap_or(crate::profile::sketch::DEFAULT_EPSILON);
        if !(lo..=hi).contains(&epsilon) {
            c.problem(
                "epsilon",
                format!("{epsilon} is out of range; use {lo} to {hi}"),
            );
        }
        Plan::for_budget(budget, epsilon)
    }

    /// Whether a window of files totalling `bytes` is read batch by batch into a profile
    /// rather than whole: when its files take more than half the budget.
    pub fn streams(&self, bytes: u64) -> bool {
        bytes > self.budget / 2
    }
}

/// The budget's share for the exact values of both sides together; a quarter goes to the
/// batch being decoded, the rest is headroom for the reader's buffers and the sketches.
const EXACT_SHARE: f64 = 0.5;
const BATCH_SHARE: f64 = 0.25;

impl Plan {
    pub fn for_budget(budget: u64, epsilon: f64) -> Plan {
        Plan {
            budget,
            epsilon,
            exact_cap: usize::MAX,
        }
    }

    /// What the accumulators of `features` numerical features keep: half the budget holds
    /// exact values, split over the features and both sides of a check.
    pub fn options(&self, features: usize) -> Options {
        let per_value = (std::mem::size_of::<f64>() * 2 * features.max(1)) as f64;
        Options {
            epsilon: self.epsilon,
            exact_limit: ((self.budget as f64 * EXACT_SHARE / per_value) as usize)
                .min(self.exact_cap),
        }
    }

    /// Bytes of decoded data per batch (all features together).
    pub fn batch_bytes(&self) -> u64 {
        (self.budget as f64 * BATCH_SHARE) as u64
    }
}

/// An input read into a profile.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub roles: Roles,
    pub profile: Profile,
    pub fingerprint: Fingerprint,
}

/// Where the column roles come from: inferred from the first file's schema where the spec
/// leaves them open (a reference), or given (a current window takes the reference's).
pub enum RolesFrom<'a> {
    Infer(&'a RoleSpec<'a>),
    Given(&'a Roles),
}

/// Read every file of `input` batch by batch into a profile of the role columns; the other
/// side's bins in `expect` are counted exactly.
pub fn profile_input(
    input: &Input,
    roles: RolesFrom<'_>,
    plan: &Plan,
    expect: &Expectation,
) -> Result<Streamed, DataError> {
    profile_input_with(input, roles, plan, expect, &|_| {})
}

/// How far a read has come: bytes of the input's files behind the batches read so far (for
/// Parquet, estimated from the rows), of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// [`profile_input`], telling `progress` after every batch.
pub fn profile_input_with(
    input: &Input,
    roles: RolesFrom<'_>,
    plan: &Plan,
    expect: &Expectation,
    progress: &dyn Fn(Progress),
) -> Result<Streamed, DataError> {
    let first = input.files.first().ok_or_else(|| DataError::Empty {
        path: PathBuf::from(&input.source),
    })?;
    let schema = open(first, plan)?.schema()?;
    let mut fingerprint = Fingerprint {
        path: input.source.clone(),
        schema: schema.clone(),
        ..Fingerprint::default()
    };
    let roles = match roles {
        RolesFrom::Infer(spec) => infer_roles(&fingerprint, spec),
        RolesFrom::Given(r) => r.clone(),
    };
    let mut builder = ProfileBuilder::new(
        schema.clone(),
        &roles.numerical,
        &roles.categorical,
        plan.options(roles.numerical.len()),
        expect,
    );
    let mut files = Vec::with_capacity(input.files.len());
    let sizes: Vec<u64> = input
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .collect();
    let total = sizes.iter().sum();
    for (i, path) in input.files.iter().enumerate() {
        let before: u64 = sizes[..i].iter().sum();
        let tell = |position: u64| {
            progress(Progress {
                done: before + position,
                total,
            })
        };
        let (digest, rows) = std::thread::scope(|s| {
            let hashing = s.spawn(|| hash_file(path));
            let read = read_file(path, &schema, &roles, plan, &mut builder, &tell);
            let digest = hashing.join().unwrap_or_else(|_| {
                Err(DataError::Parse {
                    path: path.clone(),
                    message: "hashing the file failed".into(),
                })
            });
            Ok::<_, DataError>((digest?, read?))
        })?;
        fingerprint.rows += rows;
        files.push(digest);
    }
    if fingerprint.rows == 0 {
        return Err(DataError::Empty {
            path: PathBuf::from(&input.source),
        });
    }
    (fingerprint.blake3, fingerprint.bytes) = super::combined_hash(&files);
    fingerprint.files = files;
    Ok(Streamed {
        roles,
        profile: builder.finish(),
        fingerprint,
    })
}

/// Read one file's batches into the builder; its rows.
fn read_file(
    path: &Path,
    schema: &[(String, String)],
    roles: &Roles,
    plan: &Plan,
    builder: &mut ProfileBuilder,
    progress: &dyn Fn(u64),
) -> Result<usize, DataError> {
    let mut source = open(path, plan)?;
    let own = source.schema()?;
    let names = |s: &[(String, String)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(&own) != names(schema) {
        return Err(DataError::Parse {
            path: path.to_path_buf(),
            message: format!(
                "its columns ({}) differ from the first file's ({}); every file of an input needs the same columns",
                names(&own).join(", "),
                names(schema).join(", ")
            ),
        });
    }
    let present = names(&own).join(", ");
    let wanted: Vec<String> = roles
        .numerical
        .iter()
        .chain(&roles.categorical)
        .cloned()
        .collect();
    if let Some(missing) = wanted.iter().find(|w| !own.iter().any(|(n, _)| n == *w)) {
        return Err(DataError::MissingColumn {
            path: path.to_path_buf(),
            column: missing.clone(),
            present,
        });
    }
    let mut rows = 0;
    while let Some(df) = source.next_batch(&wanted, roles)? {
        rows += df.height();
        push(path, df, roles, builder)?;
        progress(source.position());
    }
    Ok(rows)
}

/// One batch's feature columns into the accumulators, a feature per task.
fn push(
    path: &Path,
    mut df: DataFrame,
    roles: &Roles,
    builder: &mut ProfileBuilder,
) -> Result<(), DataError> {
    builder.add_rows(df.height() as u64);
    let mut numerical = Vec::with_capacity(roles.numerical.len());
    for name in &roles.numerical {
        let column = df.drop_in_place(name).map_err(|e| parse(path, e))?;
        numerical.push(column);
    }
    builder
        .numerical
        .par_iter_mut()
        .zip(numerical)
        .try_for_each(|((name, acc), column)| {
            acc.push(&to_f64(path, name, column)?);
            Ok::<_, DataError>(())
        })?;
    let df = df;
    builder
        .categorical
        .par_iter_mut()
        .try_for_each(|(name, acc)| {
            let column = df.column(name).map_err(|e| parse(path, e))?;
            let text = column.cast(&DataType::String).map_err(|e| parse(path, e))?;
            acc.push(text.str().map_err(|e| parse(path, e))?.iter());
            Ok::<_, DataError>(())
        })
}

fn parse(path: &Path, e: PolarsError) -> DataError {
    let text = e.to_string();
    // Polars appends advice for its Python API after a blank line; ours is in the message.
    let message = text.split("\n\n").next().unwrap_or(&text).to_string();
    DataError::Parse {
        path: path.to_path_buf(),
        message,
    }
}

/// BLAKE3 of a file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> Result<FileDigest, DataError> {
    let read_err = |source| DataError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = blake3::Hasher::new();
    let bytes = std::io::copy(&mut BufReader::with_capacity(1 << 20, file), &mut hasher)
        .map_err(read_err)?;
    Ok(FileDigest {
        path: path.display().to_string(),
        blake3: hasher.finalize().to_hex().to_string(),
        bytes,
    })
}

/// A file read batch by batch.
trait Batches {
    /// Column names and polars types, in file order.
    fn schema(&mut self) -> Result<Vec<(String, String)>, DataError>;
    /// The next batch of the `columns`, or None at the end.
    fn next_batch(
        &mut self,
        columns: &[String],
        roles: &Roles,
    ) -> Result<Option<DataFrame>, DataError>;
    /// Bytes of the file behind the batches returned so far.
    fn position(&self) -> u64;
}

fn open(path: &Path, plan: &Plan) -> Result<Box<dyn Batches>, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "parquet" => Ok(Box::new(ParquetBatches::open(path, plan)?)),
        "csv" => Ok(Box::new(LineBatches::open(path, plan, LineFormat::Csv)?)),
        "ndjson" | "jsonl" => Ok(Box::new(LineBatches::open(path, plan, LineFormat::Json)?)),
        _ => Err(DataError::Format {
            path: path.to_path_buf(),
        }),
    }
}

/// A Parquet file read by row group (in slices of a row group when one is larger than the
/// batch), with only the requested columns decoded.
struct ParquetBatches {
    path: PathBuf,
    metadata: FileMetadataRef,
    /// (first row, rows) of each batch still to read, once the columns are known.
    slices: Option<std::vec::IntoIter<(usize, usize)>>,
    batch_bytes: u64,
    /// Rows returned so far, and the file's size (for [`Batches::position`]).
    rows_done: usize,
    file_bytes: u64,
}

impl ParquetBatches {
    fn open(path: &Path, plan: &Plan) -> Result<ParquetBatches, DataError> {
        let mut reader = ParquetReader::new(file(path)?);
        let metadata = reader.get_metadata().map_err(|e| parse(path, e))?.clone();
        Ok(ParquetBatches {
            path: path.to_path_buf(),
            metadata,
            slices: None,
            batch_bytes: plan.batch_bytes(),
            rows_done: 0,
            file_bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        })
    }

    /// Batches along the row groups: each row group in slices of at most `rows` rows.
    fn slices(&self, rows: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        for rg in &self.metadata.row_groups {
            let n = rg.num_rows();
            let mut offset = 0;
            while offset < n {
                let len = rows.min(n - offset);
                out.push((start + offset, len));
                offset += len;
            }
            start += n;
        }
        out
    }

    fn reader(&self) -> Result<ParquetReader<std::fs::File>, DataError> {
        let mut reader = ParquetReader::new(file(&self.path)?);
        reader.set_metadata(self.metadata.clone());
        Ok(reader)
    }
}

fn file(path: &Path) -> Result<std::fs::File, DataError> {
    std::fs::File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Batches for ParquetBatches {
    fn schema(&mut self) -> Result<Vec<(String, String)>, DataError> {
        let empty = self
            .reader()?
            .with_slice(Some((0, 0)))
            .finish()
            .map_err(|e| parse(&self.path, e))?;
        Ok(schema_of(&empty))
    }

    fn next_batch(
        &mut self,
        columns: &[String],
        _roles: &Roles,
    ) -> Result<Option<DataFrame>, DataError> {
        if self.slices.is_none() {
            let per_row = (columns.len().max(1) * std::mem::size_of::<f64>()) as u64;
            let rows = (self.batch_bytes / per_row).max(1024) as usize;
            self.slices = Some(self.slices(rows).into_iter());
        }
        let Some((offset, len)) = self.slices.as_mut().and_then(Iterator::next) else {
            return Ok(None);
        };
        let df = self
            .reader()?
            .with_columns(Some(columns.to_vec()))
            .with_slice(Some((offset, len)))
            .finish()
            .map_err(|e| parse(&self.path, e))?;
        self.rows_done += len;
        Ok(Some(df))
    }

    fn position(&self) -> u64 {
        let rows = self.metadata.num_rows.max(1) as f64;
        (self.file_bytes as f64 * (self.rows_done as f64 / rows).min(1.0)) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineFormat {
    Csv,
    Json,
}

/// A CSV or NDJSON file read in blocks of whole lines, each parsed on its own (a CSV block
/// with the header line before it), the categorical columns read as text.
struct LineBatches {
    path: PathBuf,
    format: LineFormat,
    file: std::fs::File,
    block: usize,
    /// The CSV header line, with its line break.
    header: Vec<u8>,
    /// A line begun at the end of the last block.
    carry: Vec<u8>,
    /// The first block, read for the schema and not yet returned.
    first: Option<Vec<u8>>,
    done: bool,
}

/// Bytes of text per block, at least and at most.
const BLOCK_BYTES: (u64, u64) = (64 << 10, 64 << 20);

impl LineBatches {
    fn open(path: &Path, plan: &Plan, format: LineFormat) -> Result<LineBatches, DataError> {
        Ok(LineBatches {
            path: path.to_path_buf(),
            format,
            file: file(path)?,
            block: (plan.batch_bytes() / 2).clamp(BLOCK_BYTES.0, BLOCK_BYTES.1) as usize,
            header: Vec::new(),
            carry: Vec::new(),
            first: None,
            done: false,
        })
    }

    /// The next run of whole lines (the rest of the file at its end); empty when done.
    fn next_block(&mut self) -> Result<Vec<u8>, DataError> {
        let mut buf = std::mem::take(&mut self.carry);
        while !self.done {
            let start = buf.len();
            buf.resize(start + self.block, 0);
            let mut filled = start;
            while filled < buf.len() {
                let n = self
                    .file
                    .read(&mut buf[filled..])
                    .map_err(|source| DataError::Read {
                        path: self.path.clone(),
                        source,
                    })?;
                if n == 0 {
                    self.done = true;
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            if self.done {
                break;
            }
            if let Some(last) = buf[start..].iter().rposition(|b| *b == b'\n') {
                self.carry = buf.split_off(start + last + 1);
                break;
            }
        }
        Ok(buf)
    }

    fn parse(
        &self,
        block: &[u8],
        overwrite: Option<Schema>,
        columns: Option<&[String]>,
    ) -> Result<DataFrame, DataError> {
        let err = |e: PolarsError| parse(&self.path, e);
        match self.format {
            LineFormat::Csv => {
                let mut bytes = Vec::with_capacity(self.header.len() + block.len());
                bytes.extend_from_slice(&self.header);
                bytes.extend_from_slice(block);
                let mut options = CsvReadOptions::default()
                    .with_has_header(true)
                    .with_infer_schema_length(Some(10_000))
                    .with_schema_overwrite(overwrite.map(Arc::new));
                if let Some(c) = columns {
                    options =
                        options.with_columns(Some(c.iter().map(|n| n.as_str().into()).collect()));
                }
                options
                    .into_reader_with_file_handle(std::io::Cursor::new(bytes))
                    .finish()
                    .map_err(err)
            }
            LineFormat::Json => {
                let mut reader = JsonReader::new(std::io::Cursor::new(block))
                    .with_json_format(JsonFormat::JsonLines);
                if let Some(c) = columns {
                    reader =
                        reader.with_projection(Some(c.iter().map(|n| n.as_str().into()).collect()));
                }
                match &overwrite {
                    Some(schema) => reader.with_schema_overwrite(schema).finish(),
                    None => reader.finish(),
                }
                .map_err(err)
            }
        }
    }
}

impl Batches for LineBatches {
    fn schema(&mut self) -> Result<Vec<(String, String)>, DataError> {
        let mut block = self.next_block()?;
        if self.format == LineFormat::Csv {
            let end = block
                .iter()
                .position(|b| *b == b'\n')
                .map_or(block.len(), |i| i + 1);
            let rest = block.split_off(end);
            self.header = block;
            block = rest;
        }
        let df = self.parse(&block, None, None)?;
        self.first = Some(block);
        Ok(schema_of(&df))
    }

    fn next_batch(
        &mut self,
        columns: &[String],
        roles: &Roles,
    ) -> Result<Option<DataFrame>, DataError> {
        let block = match self.first.take() {
            Some(b) => b,
            None => self.next_block()?,
        };
        if block.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        // Categories are read as text whatever a block's values look like (digits in one
        // block, words in the next); numbers are inferred per block and converted as in a
        // whole-file read, so a word among them is refused the same way.
        let mut overwrite = Schema::default();
        for n in &roles.categorical {
            overwrite.insert(n.as_str().into(), DataType::String);
        }
        self.parse(&block, Some(overwrite), Some(columns)).map(Some)
    }

    fn position(&self) -> u64 {
        use std::io::Seek as _;
        (&self.file).stream_position().unwrap_or(0)
    }
}

fn schema_of(df: &DataFrame) -> Vec<(String, String)> {
    df.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().to_string()))
        .collect()
}

/// The column names and types of a data file, from its metadata (Parquet) or first block.
pub fn file_schema(path: &Path) -> Result<Vec<(String, String)>, DataError> {
    open(
        path,
        &Plan::for_budget(64 << 20, crate::profile::sketch::DEFAULT_EPSILON),
    )?
    .schema()
}

/// A profile as a file: what it summarises (the input's fingerprint and column roles) and
/// the profile. JSON; the bulk (exact values, sketches) is base64 inside it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredProfile {
    pub source: Fingerprint,
    pub roles: Roles,
    pub profile: Profile,
}

/// The extension `retraind check --reference` recognises as a profile.
pub const PROFILE_EXTENSION: &str = "profile";

impl StoredProfile {
    /// Whether `location` names a profile file rather than data.
    pub fn is_profile(location: &str) -> bool {
        Path::new(location)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case(PROFILE_EXTENSION))
    }

    pub fn read(path: &Path) -> Result<StoredProfile, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let stored: StoredProfile =
            serde_json::from_slice(&bytes).map_err(|e| DataError::Parse {
                path: path.to_path_buf(),
                message: format!("not a retraind profile: {e}"),
            })?;
        if stored.profile.format != crate::profile::FORMAT {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "profile format {} is not this build's ({}); rebuild it with `retraind profile`",
                    stored.profile.format,
                    crate::profile::FORMAT
                ),
            });
        }
        Ok(stored)
    }

    /// Write atomically; the BLAKE3 of the bytes written, for a lineage to cite.
    pub fn write(&self, path: &Path) -> Result<String, DataError> {
        let err = |message: String| DataError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| err(e.to_string()))?;
        crate::artifacts::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    }

    /// The profile Spark computed of a window whose rows stayed in Spark: its fingerprint
    /// names the endpoint and relation, hashes the summary and counts the bytes received.
    pub fn of_spark(s: crate::spark::Summarised, roles: &Roles) -> StoredProfile {
        StoredProfile {
            source: Fingerprint {
                path: s.source,
                blake3: s.blake3,
                bytes: s.bytes_received,
                rows: s.profile.rows as usize,
                schema: s.profile.schema.clone(),
                files: Vec::new(),
            },
            roles: roles.clone(),
            profile: s.profile,
        }
    }

    /// The profile of a table in memory whose rows are the file `source` describes.
    pub fn of_table(table: &super::Table, roles: &Roles, source: Fingerprint) -> StoredProfile {
        let profile = ProfileBuilder::of_columns(
            source.schema.clone(),
            &table.numerical,
            &table.categorical,
            Options::default(),
            &Expectation::default(),
        );
        StoredProfile {
            source,
            roles: roles.clone(),
            profile,
        }
    }

    /// Fold the profile of more rows of the same columns into this one.
    pub fn merge(&mut self, other: StoredProfile, options: &Options) -> Result<(), String> {
        if other.roles != self.roles {
            return Err(format!(
                "{} has other column roles than {}",
                other.source.path, self.source.path
            ));
        }
        self.profile
            .merge(other.profile, options)
            .map_err(|e| e.to_string())?;
        self.source.rows += other.source.rows;
        self.source.bytes += other.source.bytes;
        self.source.files.extend(other.source.files);
        self.source.path = format!("{} + {}", self.source.path, other.source.path);
        (self.source.blake3, _) = super::combined_hash(&self.source.files);
        Ok(())
    }
}
