//! Reading a live model metric from Prometheus: an instant query against the HTTP API
//! (`GET /api/v1/query?query=…`), e.g. a serving system's accuracy gauge. The answer must be
//! exactly one sample; anything else (server down, error status, an empty or multi-series
//! vector, NaN) is an error the check reports as `unknown`, never as healthy.

use std::time::Duration;

use serde::Deserialize;

/// Why a live metric could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    #[error("Prometheus at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("Prometheus at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "query `{query}` returned {series} series; it must return exactly one (aggregate it, e.g. avg(...))"
    )]
    NotOneSeries { query: String, series: usize },
    #[error("query `{query}` returned `{value}`, not a finite number")]
    NotANumber { query: String, value: String },
    #[error("unexpected answer from Prometheus at {url}: {message}")]
    Protocol { url: String, message: String },
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

/// Run an instant query and return its single value.
pub async fn query(base_url: &str, query: &str, timeout: Duration) -> Result<f64, PromqlError> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| PromqlError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    };
    let client =
        crate::http::client(timeout, None).map_err(|message| PromqlError::Unreachable {
            url: url.clone(),
            message,
        })?;
    let response = client
        .get(&url)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    let answer: Answer = serde_json::from_str(&body).map_err(|e| {
        if status.is_success() {
            PromqlError::Protocol {
                url: url.clone(),
                message: e.to_string(),
            }
        } else {
            PromqlError::Status {
                url: url.clone(),
                status: status.as_u16(),
                message: body.chars().take(200).collect(),
            }
        }
    })?;
    if answer.status != "success" {
        return Err(PromqlError::Status {
            url,
            status: status.as_u16(),
            message: format!(
                "{}: {}",
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            ),
        });
    }
    let value = match answer.data {
        Some(Data::Vector(v)) if v.len() == 1 => v[0].value.1.clone(),
        Some(Data::Vector(v)) => {
            return Err(PromqlError::NotOneSeries {
                query: query.to_string(),
                series: v.len(),
            });
        }
        Some(Data::Scalar((_, v))) => v,
        Some(Data::Matrix(_)) | Some(Data::String(_)) | None => {
            return Err(PromqlError::Protocol {
                url,
                message: "expected an instant vector or scalar".into(),
            });
        }
    };
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or(PromqlError::NotANumber {
            query: query.to_string(),
            value,
        })
}
