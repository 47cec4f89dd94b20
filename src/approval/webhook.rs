//! The generic webhook channel: approval requests and notices POSTed as JSON, signed per the
//! Standard Webhooks convention (`webhook-id`, `webhook-timestamp`, `webhook-signature`), so
//! any system can receive them and verify they came from us. Decisions come back at
//! `POST /hooks/approval` signed the same way with the same secret ([`parse_decision`] reads
//! the body after [`crate::signing::verify_webhook`] accepted it).
//!
//! Message ids are stable per request (`approval-<cycle>`), so a receiver that deduplicates
//! sees a redelivery after a restart as the same message.

use serde::Deserialize;
use serde_json::json;

use super::{ApprovalChannel, ApprovalDecision, ApprovalError, ApprovalRequest, BoxFuture, Notice};
use crate::secret::{Secret, SecretSource};
use crate::signing;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[webhook]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawWebhook {
    pub url: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub timeout: Option<String>,
}

/// The generic signed webhook (outgoing requests and notices, incoming decisions).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where approval requests and notices are POSTed (none: incoming decisions only).
    pub url: Option<String>,
    pub secret: SecretSource,
    pub timeout: std::time::Duration,
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl WebhookConfig {
    /// Validate `raw` (the checker is at `webhook`); without a secret there is no webhook.
    pub fn from_raw(raw: RawWebhook, files: Files, c: &mut Checker) -> Option<WebhookConfig> {
        if let Some(u) = &raw.url {
            c.url("url", u, "");
        }
        let timeout = c.duration("timeout", &raw.timeout, TIMEOUT);
        match files.secret(
            c,
            "secret",
            &raw.secret_file,
            &raw.secret_env,
            Some("webhook-secret"),
        ) {
            Some(secret) => Some(WebhookConfig {
                url: raw.url,
                secret,
                timeout,
            }),
            None => {
                c.problem(
                    "secret_file",
                    "missing; webhooks are always signed (Standard Webhooks): create a secret file",
                );
                None
            }
        }
    }
}

/// The outgoing side of the webhook channel.
pub struct Webhook {
    url: String,
    secret: Secret,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: String, secret: Secret, timeout: std::time::Duration) -> Webhook {
        Webhook {
            url,
            secret,
            client: super::http_client(timeout),
        }
    }

    async fn send(&self, id: &str, body: serde_json::Value) -> Result<(), ApprovalError> {
        let body = body.to_string().into_bytes();
        let headers =
            signing::sign_webhook(&self.secret, id, chrono::Utc::now().timestamp(), &body);
        super::post_json(
            &self.client,
            "webhook",
            &self.url,
            None,
            &headers.pairs(),
            body,
        )
        .await
        .map(|_| ())
    }
}

impl ApprovalChannel for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let body = json!({
                "type": "approval.requested",
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "data": request,
                "answer": {
                    "url": "/hooks/approval",
                    "body": { "cycle": request.cycle, "decision": "approve | reject", "approver": "NAME", "reason": "TEXT" }
                }
            });
            self.send(&format!("approval-{}", request.cycle), body)
                .await
        })
    }

    fn notify<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let body = json!({
                "type": format!("pipeline.{}", notice.kind),
                "timestamp": notice.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "data": notice,
            });
            let id = format!(
                "{}-{}-{}",
                notice.kind,
                notice.pipeline,
                notice.at.timestamp_millis()
            );
            self.send(&id, body).await
        })
    }
}

/// A decision sent to `POST /hooks/approval`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub cycle: i64,
    pub decision: ApprovalDecision,
    pub approver: String,
    #[serde(default)]
    pub reason: String,
}

/// Parse a verified decision body, naming what is wrong.
pub fn parse_decision(body: &[u8]) -> Result<DecisionBody, String> {
    let d: DecisionBody = serde_json::from_slice(body).map_err(|e| {
        format!("invalid decision JSON: {e}; send {{\"cycle\": N, \"decision\": \"approve\"|\"reject\", \"approver\": \"NAME\", \"reason\": \"...\"}}")
    })?;
    if d.approver.trim().is_empty() {
        return Err("`approver` is empty; name the person deciding".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_strictly() {
        let d = parse_decision(
            br#"{"cycle": 4, "decision": "reject", "approver": "bob", "reason": "too slow"}"#,
        )
        .unwrap();
        assert_eq!((d.cycle, d.decision), (4, ApprovalDecision::Reject));
        assert!(
            parse_decision(br#"{"cycle": 4, "decision": "maybe", "approver": "bob"}"#).is_err()
        );
        assert!(
            parse_decision(br#"{"cycle": 4, "decision": "approve", "approver": " "}"#)
                .unwrap_err()
                .contains("approver")
        );
        assert!(
            parse_decision(
                br#"{"cycle": 4, "decision": "approve", "approver": "b", "admin": true}"#
            )
            .is_err()
        );
        assert!(
            parse_decision(b"not json")
                .unwrap_err()
                .contains("invalid decision JSON")
        );
    }
}
