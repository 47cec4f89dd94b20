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
        "{path}: target column `{column}` has {nulls} empty value(s); every labelled row needs a target"
    )]
    MissingLabels {
        path: PathBuf,
        column: String,
        nulls: usize,
    },
}

/// What a file held when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub path: String,
    /// BLAKE3 of the file's bytes, hex.
    pub blake3: String,
    pub bytes: u64,
    pub rows: usize,
    /// Column names and polars dtypes, in file order.
    pub schema: Vec<(String, String)>,
}

/// Column roles of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    pub numerical: Vec<String>,
    pub categorical: Vec<String>,
    pub target: String,
}

/// A loaded table: feature columns by role, and the target when the file has labels.
#[derive(Debug, Clone)]
pub struct Table {
    pub rows: usize,
    /// Numerical features; nulls are NaN.
    pub numerical: Vec<(String, Vec<f64>)>,
    /// Categorical features; nulls are the empty string.
    pub categorical: Vec<(String, Vec<String>)>,
    /// Target labels as text (class names), if the column exists.
    pub target: Option<Vec<String>>,
    pub fingerprint: Fingerprint,
}

impl Table {
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
            fingerprint: self.fingerprint.clone(),
        }
    }
}

fn read_frame(path: &Path) -> Result<(DataFrame, Fingerprint), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    let len = bytes.len() as u64;
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
            "parquet" => ParquetReader::new(cursor).finish().map_err(parse_err)?,
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
    let df = std::panic::catch_unwind(read).map_err(|panic| DataError::Parse {
        path: path.to_path_buf(),
        message: format!(
            "the reader gave up on this file ({}); is it truncated or not the format its name says?",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message")
        ),
    })??;
    let schema = df
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().to_string()))
        .collect();
    let fingerprint = Fingerprint {
        path: path.display().to_string(),
        blake3,
        bytes: len,
        rows: df.height(),
        schema,
    };
    Ok((df, fingerprint))
}

/// Infer column roles from a file's schema where the config does not list them: numeric
/// columns are numerical features, text and boolean columns categorical; the target and the
/// ignored columns are left out.
pub fn infer_roles(
    fingerprint: &Fingerprint,
    numerical: Option<&[String]>,
    categorical: Option<&[String]>,
    target: &str,
    ignore: &[String],
) -> Roles {
    let skip = |n: &str| n == target || ignore.iter().any(|i| i == n);
    let is_numeric = |dtype: &str| {
        [
            "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64",
        ]
        .contains(&dtype)
    };
    let listed = |l: Option<&[String]>| l.map(<[String]>::to_vec);
    let numerical = listed(numerical).unwrap_or_else(|| {
        fingerprint
            .schema
            .iter()
            .filter(|(n, t)| {
                !skip(n) && is_numeric(t) && !categorical.is_some_and(|c| c.contains(n))
            })
            .map(|(n, _)| n.clone())
            .collect()
    });
    let categorical = listed(categorical).unwrap_or_else(|| {
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
        target: target.to_string(),
    }
}

/// What the configuration says about column roles; unlisted roles are inferred.
#[derive(Debug, Clone, Default)]
pub struct RoleSpec<'a> {
    pub numerical: Option<&'a [String]>,
    pub categorical: Option<&'a [String]>,
    pub target: &'a str,
    pub ignore: &'a [String],
}

/// Read a file once, infer the roles `spec` leaves open from its schema, and extract them.
pub fn load_inferred(
    path: &Path,
    spec: &RoleSpec<'_>,
    require_target: bool,
) -> Result<(Roles, Table), DataError> {
    let (df, fingerprint) = read_frame(path)?;
    let roles = infer_roles(
        &fingerprint,
        spec.numerical,
        spec.categorical,
        spec.target,
        spec.ignore,
    );
    let table = extract(path, &df, fingerprint, &roles, require_target)?;
    Ok((roles, table))
}

/// Read a file and extract the columns of `roles`. `require_target` makes a missing target
/// column an error; otherwise the table simply has no labels.
pub fn load(path: &Path, roles: &Roles, require_target: bool) -> Result<Table, DataError> {
    let (df, fingerprint) = read_frame(path)?;
    extract(path, &df, fingerprint, roles, require_target)
}

fn extract(
    path: &Path,
    df: &DataFrame,
    fingerprint: Fingerprint,
    roles: &Roles,
    require_target: bool,
) -> Result<Table, DataError> {
    if df.height() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let present = || {
        df.get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let column = |name: &str| {
        df.column(name).map_err(|_| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            present: present(),
        })
    };
    let parse_err = |e: PolarsError| DataError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let as_text = |c: &Column| -> Result<Vec<String>, DataError> {
        let s = c.cast(&DataType::String).map_err(parse_err)?;
        let s = s.str().map_err(parse_err)?;
        Ok(s.iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let mut numerical = Vec::with_capacity(roles.numerical.len());
    for name in &roles.numerical {
        let c = column(name)?;
        if c.null_count() == c.len() {
            // Entirely empty: a column of missing values (the quality gate reports it), whatever
            // type the reader guessed for it.
            numerical.push((name.clone(), vec![f64::NAN; c.len()]));
            continue;
        }
        if !c.dtype().is_primitive_numeric() {
            return Err(DataError::NotNumeric {
                path: path.to_path_buf(),
                column: name.clone(),
                dtype: c.dtype().to_string(),
            });
        }
        let f = c.cast(&DataType::Float64).map_err(parse_err)?;
        let f = f.f64().map_err(parse_err)?;
        numerical.push((
            name.clone(),
            f.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
        ));
    }
    let mut categorical = Vec::with_capacity(roles.categorical.len());
    for name in &roles.categorical {
        categorical.push((name.clone(), as_text(column(name)?)?));
    }
    let target = match df.column(&roles.target) {
        Ok(c) => {
            let nulls = c.null_count();
            if nulls > 0 {
                return Err(DataError::MissingLabels {
                    path: path.to_path_buf(),
                    column: roles.target.clone(),
                    nulls,
                });
            }
            Some(as_text(c)?)
        }
        Err(_) if !require_target => None,
        Err(_) => {
            return Err(column(&roles.target).err().unwrap_or(DataError::Empty {
                path: path.to_path_buf(),
            }));
        }
    };
    Ok(Table {
        rows: df.height(),
        numerical,
        categorical,
        target,
        fingerprint,
    })
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
        let (roles, t) = load_inferred(&p, &spec, true).unwrap();
        assert_eq!(t.fingerprint.rows, 2);
        assert_eq!(t.fingerprint.blake3.len(), 64);
        assert_eq!(roles.numerical, vec!["a", "b"]);
        assert_eq!(roles.categorical, vec!["seg"]);
        assert_eq!(load(&p, &roles, true).unwrap().fingerprint, t.fingerprint);
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

    #[test]
    fn bad_inputs_name_the_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let roles = Roles {
            numerical: vec!["a".into()],
            categorical: vec![],
            target: "target".into(),
        };
        let missing = load(&dir.path().join("nope.csv"), &roles, true).unwrap_err();
        assert!(missing.to_string().contains("nope.csv"), "{missing}");
        let p = write(dir.path(), "x.txt", "a\n1\n");
        assert!(matches!(
            load(&p, &roles, true),
            Err(DataError::Format { .. })
        ));
        let p = write(dir.path(), "c.csv", "b,target\n1,0\n");
        let e = load(&p, &roles, true).unwrap_err().to_string();
        assert!(e.contains("`a` is missing") && e.contains("c.csv"), "{e}");
        let p = write(dir.path(), "t.csv", "a,target\nfoo,0\n");
        assert!(matches!(
            load(&p, &roles, true),
            Err(DataError::NotNumeric { .. })
        ));
        let p = write(dir.path(), "e.csv", "a,target\n");
        assert!(matches!(
            load(&p, &roles, true),
            Err(DataError::Empty { .. })
        ));
        let p = write(dir.path(), "u.csv", "a\n1\n");
        assert!(load(&p, &roles, false).unwrap().target.is_none());
        assert!(matches!(
            load(&p, &roles, true),
            Err(DataError::MissingColumn { .. })
        ));
    }
}
