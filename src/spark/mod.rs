//! Spark as the engine when the data lives in Spark: a [`SparkSource`] names a Spark Connect
//! endpoint (`sc://host:port`), a table or a SQL query and a token; [`summarise`] has Spark
//! compute the profile of its rows — counts on the reference's bins, approximate quantiles
//! (Spark's accuracy turned into a rank error), category counts, row counts — and only those
//! summaries travel back. The drift decision is then taken locally, as for sketched
//! features.
//!
//! Why not the `apache-spark-connect` crate: its protocol crate compiles Spark's `.proto`
//! files at build time, so every build would need `protoc` and Google's include files
//! installed by hand, and its synchronous session retries an unavailable server for about
//! ten minutes with no way to shorten it. The one call needed here (`ExecutePlan` with a
//! SQL relation) is a handful of messages, declared in [`wire`].
//!
//! Must not decide drift (that is `drift`'s, on the profile) and must not log or return the
//! token: errors carry Spark's message and the endpoint without it.

use std::time::Duration;

use crate::profile::{Expectation, Profile};
use crate::secret::Secret;

pub mod config;
pub mod sql;
pub mod wire;

pub use config::SparkConfig;
pub use sql::{Columns, Relation, Resolution};

/// The default Spark Connect port.
pub const DEFAULT_PORT: u16 = 15002;

/// Longest Spark message kept in a cycle's reason (Spark's include the whole query plan).
const MESSAGE_LIMIT: usize = 2_000;

/// A parsed `sc://host:port/;use_ssl=true;user_id=…` address (never with a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub use_ssl: bool,
    pub user_id: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sc://{}:{}", self.host, self.port)?;
        if self.use_ssl {
            write!(f, "/;use_ssl=true")?;
        }
        Ok(())
    }
}

impl Endpoint {
    /// Parse a Spark Connect address. The token goes in a file or variable, not here: an
    /// address is printed in logs and reports.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let rest = text.strip_prefix("sc://").ok_or_else(|| {
            format!(
                "`{}` is not a Spark Connect address; write sc://host:port",
                redact(text)
            )
        })?;
        let (authority, params) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>().map_err(|_| {
                    format!(
                        "the port in {} is not a number from 1 to 65535",
                        redact(text)
                    )
                })?,
            ),
            _ => (authority, DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(format!(
                "{} names no host; write sc://host:port",
                redact(text)
            ));
        }
        let mut endpoint = Endpoint {
            host: host.to_string(),
            port,
            use_ssl: false,
            user_id: "retraind".to_string(),
        };
        for pair in params
            .trim_start_matches(';')
            .split(';')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "use_ssl" => {
                    endpoint.use_ssl = value.parse().map_err(|_| {
                        format!("use_ssl={value} in the Spark address is not true or false")
                    })?
                }
                "user_id" => endpoint.user_id = value.to_string(),
                "token" => {
                    return Err("the Spark address holds a token; put it in a file (token_file) or a variable (token_env) instead, so it never shows in logs".to_string());
                }
                other => {
                    return Err(format!(
                        "`{other}` is not a Spark address parameter retraind knows; use use_ssl or user_id"
                    ));
                }
            }
        }
        Ok(endpoint)
    }

    /// Whether the host is this machine (a token may go there without TLS).
    pub fn is_loopback(&self) -> bool {
        matches!(
            self.host.as_str(),
            "localhost" | "127.0.0.1" | "[::1]" | "::1"
        )
    }
}

/// An address as it may be printed: any `token=` parameter hidden.
fn redact(text: &str) -> String {
    match text.find("token=") {
        Some(i) => format!("{}token=***", &text[..i]),
        None => text.to_string(),
    }
}

/// Why Spark gave no summary. None of these is a verdict: the step fails with the reason.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error(
        "cannot reach Spark Connect at {endpoint}: {message} (check the address, that the server runs and that this machine may connect to it)"
    )]
    Unreachable { endpoint: String, message: String },
    #[error(
        "Spark Connect at {endpoint} refused the credentials: {message} (check token_file or token_env)"
    )]
    Refused { endpoint: String, message: String },
    #[error("Spark failed the summary query of {relation}: {message}")]
    Spark { relation: String, message: String },
    #[error(
        "Spark did not answer within {0:?}; raise [pipeline.data.spark] timeout or make the query cheaper"
    )]
    Timeout(Duration),
    #[error(
        "a token is sent to {endpoint} only over TLS; add ;use_ssl=true to the address (or connect to a loopback address)"
    )]
    TokenWithoutTls { endpoint: String },
    #[error("the Spark token holds characters that cannot go in a header; check the token file")]
    BadToken,
    #[error(
        "Spark's {relation} has no column `{column}`, which the reference has as a feature; add it to the query or list it in data.ignore"
    )]
    MissingColumn { relation: String, column: String },
    #[error("Spark Connect answered without a result")]
    NoResult,
    #[error("cannot read Spark's Arrow result: {0}")]
    Decode(String),
    #[error(transparent)]
    Summary(#[from] sql::BadSummary),
}

impl SparkError {
    /// A gRPC status from the server, with Spark's own message kept (shortened).
    fn from_status(endpoint: &Endpoint, status: tonic::Status) -> SparkError {
        let message = spark_message(status.message());
        let endpoint = endpoint.to_string();
        match status.code() {
            tonic::Code::Unavailable => SparkError::Unreachable { endpoint, message },
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                SparkError::Refused { endpoint, message }
            }
            _ => SparkError::Spark {
                relation: String::new(),
                message,
            },
        }
    }

    fn about(self, relation: &Relation) -> SparkError {
        match self {
            SparkError::Spark { message, .. } => SparkError::Spark {
                relation: relation.describe(),
                message,
            },
            other => other,
        }
    }
}

/// Spark's message without the query plan it appends (and at most [`MESSAGE_LIMIT`] long).
fn spark_message(raw: &str) -> String {
    let mut kept = Vec::new();
    for line in raw.lines() {
        let t = line.trim_start();
        if t.starts_with('\'') || t.starts_with("+-") || t.starts_with(":-") || t.starts_with("== ")
        {
            break;
        }
        kept.push(t);
        if t.contains("SQLSTATE") {
            break;
        }
    }
    let joined = kept.join(" ");
    let mut message: String = joined.chars().take(MESSAGE_LIMIT).collect();
    if message.len() < joined.len() {
        message.push_str(" …");
    }
    message
}

/// Where one side's rows are in Spark.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkSource {
    pub endpoint: Endpoint,
    pub relation: Relation,
    pub timeout: Duration,
}

/// A profile computed by Spark, and what it cost on the wire.
#[derive(Debug, Clone)]
pub struct Summarised {
    pub profile: Profile,
    /// The endpoint and the relation, in words.
    pub source: String,
    /// BLAKE3 of the profile (the rows never arrive to be hashed).
    pub blake3: String,
    pub bytes_received: u64,
}

/// Have Spark profile `source`'s role columns (counting on the bins in `expect`) with rank
/// error at most `epsilon`.
pub async fn summarise(
    source: &SparkSource,
    token: Option<Secret>,
    roles: Columns<'_>,
    expect: &Expectation,
    epsilon: f64,
) -> Result<Summarised, SparkError> {
    let run = async {
        if token.is_some() && !source.endpoint.use_ssl && !source.endpoint.is_loopback() {
            return Err(SparkError::TokenWithoutTls {
                endpoint: source.endpoint.to_string(),
            });
        }
        let relation = &source.relation;
        let mut session = wire::Session::connect(&source.endpoint, token).await?;
        let empty = session
            .sql(&sql::schema_query(relation))
            .await
            .map_err(|e| e.about(relation))?;
        let schema = sql::schema_of(&empty);
        for column in roles.numerical.iter().chain(roles.categorical) {
            if !schema.iter().any(|(name, _)| name == column) {
                return Err(SparkError::MissingColumn {
                    relation: relation.describe(),
                    column: column.clone(),
                });
            }
        }
        let resolution = Resolution::for_epsilon(epsilon);
        let numbers = session
            .sql(&sql::numbers_query(relation, roles, expect, resolution))
            .await
            .map_err(|e| e.about(relation))?;
        let categories = match sql::categories_query(relation, roles) {
            Some(q) => Some(session.sql(&q).await.map_err(|e| e.about(relation))?),
            None => None,
        };
        let profile = sql::profile_of(
            schema,
            roles,
            expect,
            resolution,
            &numbers,
            categories.as_ref(),
        )?;
        let json = serde_json::to_vec(&profile).map_err(|e| SparkError::Decode(e.to_string()))?;
        let bytes_received = session.bytes_received;
        tracing::info!(
            endpoint = %source.endpoint,
            relation = %relation.describe(),
            rows = profile.rows,
            bytes_received,
            "Spark computed the window's summaries"
        );
        Ok(Summarised {
            source: format!("{} {}", source.endpoint, relation.describe()),
            blake3: blake3::hash(&json).to_hex().to_string(),
            profile,
            bytes_received,
        })
    };
    tokio::time::timeout(source.timeout, run)
        .await
        .map_err(|_| SparkError::Timeout(source.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses as Spark's clients write them; a token in one is refused without echoing it.
    #[test]
    fn addresses_parse_as_spark_writes_them() {
        let e = Endpoint::parse("sc://spark.lake:443/;use_ssl=true;user_id=ml").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.use_ssl),
            ("spark.lake", 443, true)
        );
        assert_eq!(e.user_id, "ml");
        assert_eq!(e.to_string(), "sc://spark.lake:443/;use_ssl=true");
        let d = Endpoint::parse("sc://localhost").unwrap();
        assert_eq!(
            (d.port, d.use_ssl, d.is_loopback()),
            (DEFAULT_PORT, false, true)
        );
        let t = Endpoint::parse("sc://h:1/;token=hunter2").unwrap_err();
        assert!(t.contains("token_file") && !t.contains("hunter2"), "{t}");
        let bad = Endpoint::parse("http://h:1").unwrap_err();
        assert!(bad.contains("sc://host:port"), "{bad}");
        let port = Endpoint::parse("sc://h:99999;token=x").unwrap_err();
        assert!(!port.contains("token=x") && port.contains("***"), "{port}");
    }

    /// Spark's message is kept up to its SQLSTATE; the plan printed after it is not.
    #[test]
    fn spark_messages_lose_the_plan() {
        let raw = "[TABLE_OR_VIEW_NOT_FOUND] The table or view `t` cannot be found.\nSearch path: [].\nSQLSTATE: 42P01; line 1 pos 14;\n'Project [*]\n+- 'UnresolvedRelation [t], [], false\n";
        assert_eq!(
            spark_message(raw),
            "[TABLE_OR_VIEW_NOT_FOUND] The table or view `t` cannot be found. Search path: []. SQLSTATE: 42P01; line 1 pos 14;"
        );
    }
}
