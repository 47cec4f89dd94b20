//! The Spark Connect protocol, as much of it as a summary query needs: one `ExecutePlan`
//! call (gRPC over HTTP/2) whose plan is a SQL relation, answered by a stream of Arrow IPC
//! batches. The messages are declared here with prost's derive, field numbers as in Spark
//! 4.2's `spark/connect/base.proto` and `relations.proto` (fields not needed are left out;
//! protobuf skips unknown fields), so building needs no `protoc`.
//!
//! Must not build SQL or interpret results (that is `sql`'s): it only carries a query there
//! and a table back, counting the bytes received.

use std::io::Cursor;
use std::time::Duration;

use polars::prelude::*;
use polars_arrow::io::ipc::read::{StreamReader, StreamState, read_stream_metadata};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint as TonicEndpoint};

use super::{Endpoint, SparkError};
use crate::secret::Secret;

/// `spark.connect.ExecutePlanRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecutePlanRequest {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub user_context: Option<UserContext>,
    #[prost(message, optional, tag = "3")]
    pub plan: Option<Plan>,
    #[prost(string, optional, tag = "4")]
    pub client_type: Option<String>,
}

/// `spark.connect.UserContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserContext {
    #[prost(string, tag = "1")]
    pub user_id: String,
}

/// `spark.connect.Plan` with its `root` relation (field 1 of the `op_type` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Plan {
    #[prost(message, optional, tag = "1")]
    pub root: Option<Relation>,
}

/// `spark.connect.Relation` with its `sql` relation (field 10 of the `rel_type` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Relation {
    #[prost(message, optional, tag = "10")]
    pub sql: Option<Sql>,
}

/// `spark.connect.SQL`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sql {
    #[prost(string, tag = "1")]
    pub query: String,
}

/// `spark.connect.ExecutePlanResponse`: only its Arrow batches matter here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecutePlanResponse {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub arrow_batch: Option<ArrowBatch>,
}

/// `spark.connect.ExecutePlanResponse.ArrowBatch`: an Arrow IPC stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowBatch {
    #[prost(int64, tag = "1")]
    pub row_count: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

const EXECUTE_PLAN: &str = "/spark.connect.SparkConnectService/ExecutePlan";
/// Spark's own client accepts messages up to this size.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection to one Spark Connect endpoint, in one Spark session.
pub struct Session {
    channel: Channel,
    endpoint: Endpoint,
    token: Option<Secret>,
    session_id: String,
    /// Bytes of protobuf messages received so far.
    pub bytes_received: u64,
}

impl Session {
    /// Dial the endpoint (TLS when it says `use_ssl=true`).
    pub async fn connect(
        endpoint: &Endpoint,
        token: Option<Secret>,
    ) -> Result<Session, SparkError> {
        let unreachable = |message: String| SparkError::Unreachable {
            endpoint: endpoint.to_string(),
            message,
        };
        let scheme = if endpoint.use_ssl { "https" } else { "http" };
        let uri = format!("{scheme}://{}:{}", endpoint.host, endpoint.port);
        let mut dial = TonicEndpoint::from_shared(uri)
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT);
        if endpoint.use_ssl {
            let tls = ClientTlsConfig::new()
                .domain_name(endpoint.host.clone())
                .with_native_roots();
            dial = dial
                .tls_config(tls)
                .map_err(|e| unreachable(e.to_string()))?;
        }
        let channel = dial.connect().await.map_err(|e| unreachable(chain(&e)))?;
        Ok(Session {
            channel,
            endpoint: endpoint.clone(),
            token,
            session_id: session_id(),
            bytes_received: 0,
        })
    }

    /// Run one query and collect its result.
    pub async fn sql(&mut self, query: &str) -> Result<DataFrame, SparkError> {
        let request = ExecutePlanRequest {
            session_id: self.session_id.clone(),
            user_context: Some(UserContext {
                user_id: self.endpoint.user_id.clone(),
            }),
            plan: Some(Plan {
                root: Some(Relation {
                    sql: Some(Sql {
                        query: query.to_string(),
                    }),
                }),
            }),
            client_type: Some(format!("retraind/{}", env!("CARGO_PKG_VERSION"))),
        };
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.token {
            let value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| SparkError::BadToken)?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut grpc =
            tonic::client::Grpc::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        grpc.ready().await.map_err(|e| SparkError::Unreachable {
            endpoint: self.endpoint.to_string(),
            message: e.to_string(),
        })?;
        let codec = tonic_prost::ProstCodec::<ExecutePlanRequest, ExecutePlanResponse>::default();
        let path = http::uri::PathAndQuery::from_static(EXECUTE_PLAN);
        let status = |s: tonic::Status| SparkError::from_status(&self.endpoint, s);
        let mut stream = grpc
            .server_streaming(request, path, codec)
            .await
            .map_err(status)?
            .into_inner();
        let mut frames = Vec::new();
        while let Some(message) = stream.message().await.map_err(status)? {
            self.bytes_received += prost::Message::encoded_len(&message) as u64;
            if let Some(batch) = message.arrow_batch {
                frames.extend(decode(&batch.data)?);
            }
        }
        let mut frames = frames.into_iter();
        let mut all = frames.next().ok_or(SparkError::NoResult)?;
        for f in frames {
            all.vstack_mut_owned(f)
                .map_err(|e| SparkError::Decode(e.to_string()))?;
        }
        Ok(all)
    }
}

/// The frames of one Arrow IPC stream (an empty one still carries the schema).
fn decode(data: &[u8]) -> Result<Vec<DataFrame>, SparkError> {
    let bad = |e: PolarsError| SparkError::Decode(e.to_string());
    let mut reader = Cursor::new(data);
    let metadata = read_stream_metadata(&mut reader).map_err(bad)?;
    let names: Vec<PlSmallStr> = metadata.schema.iter_names().cloned().collect();
    let empty = || {
        let columns = metadata
            .schema
            .iter_values()
            .map(|f| Column::new_empty(f.name.clone(), &DataType::from_arrow_field(f)))
            .collect::<Vec<_>>();
        DataFrame::new(0, columns).map_err(bad)
    };
    let mut frames = vec![empty()?];
    for state in StreamReader::new(reader, metadata.clone(), None) {
        let StreamState::Some(batch) = state.map_err(bad)? else {
            continue;
        };
        let height = batch.height();
        let columns = names
            .iter()
            .cloned()
            .zip(batch.into_arrays())
            .map(|(name, array)| Series::try_from((name, array)).map(Column::from))
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(bad)?;
        frames.push(DataFrame::new(height, columns).map_err(bad)?);
    }
    Ok(frames)
}

/// A random version-4 UUID: Spark wants one as the session id.
fn session_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An error with its causes, for transport failures whose top line says little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    /// Session ids are version-4 UUIDs, as the server checks.
    #[test]
    fn session_ids_are_version_4_uuids() {
        let id = super::session_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
    }
}
