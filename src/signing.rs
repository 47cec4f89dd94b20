//! Request signatures, both directions: Slack's v0 scheme (verify incoming interactions) and
//! the Standard Webhooks scheme (sign outgoing webhooks and deploy hooks, verify incoming
//! approval decisions). Pure functions over raw bytes: verification happens on the exact
//! body received, before any parsing, with a timestamp window and a constant-time compare.
//! Replay protection (an id seen twice) is the caller's, backed by the store.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::{Secret, constant_time_eq};

/// The window either side of now in which a signed timestamp is accepted.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signed request was refused. The messages never contain the secret or the expected
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    Malformed(&'static str),
    #[error(
        "timestamp {ts} is {skew} s away from now (more than {TOLERANCE_SECS} s): stale or replayed request"
    )]
    Stale { ts: i64, skew: i64 },
    #[error("signature does not match the body (wrong secret or tampered body)")]
    Mismatch,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn fresh(ts_text: &str, header: &'static str, now: i64) -> Result<i64, SignatureError> {
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed(header))?;
    let skew = (now - ts).abs();
    if skew > TOLERANCE_SECS {
        return Err(SignatureError::Stale { ts, skew });
    }
    Ok(ts)
}

/// Slack's `v0=<hex>` signature of `v0:{timestamp}:{body}`.
pub fn slack_signature(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(
        secret.expose().as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    );
    format!("v0={}", hex::encode(mac))
}

/// Verify a Slack request from its `X-Slack-Request-Timestamp` and `X-Slack-Signature`
/// headers and raw body.
pub fn verify_slack(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::MissingHeader("X-Slack-Signature"))?;
    fresh(ts, "X-Slack-Request-Timestamp", now)?;
    if !sig.starts_with("v0=") {
        return Err(SignatureError::Malformed("X-Slack-Signature"));
    }
    let expected = slack_signature(secret, ts.trim(), body);
    if constant_time_eq(expected.as_bytes(), sig.trim().as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>` is decoded, anything else is
/// used as raw bytes.
fn webhook_key(secret: &Secret) -> Vec<u8> {
    let s = secret.expose();
    s.strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| s.as_bytes().to_vec())
}

/// The headers of a Standard Webhooks message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    pub id: String,
    pub timestamp: i64,
    /// `v1,<base64>`.
    pub signature: String,
}

impl WebhookHeaders {
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("webhook-id", self.id.clone()),
            ("webhook-timestamp", self.timestamp.to_string()),
            ("webhook-signature", self.signature.clone()),
        ]
    }
}

/// Sign `body` as message `id` at `timestamp`.
pub fn sign_webhook(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> WebhookHeaders {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(
        &webhook_key(secret),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    WebhookHeaders {
        id: id.to_string(),
        timestamp,
        signature: format!("v1,{}", B64.encode(mac)),
    }
}

/// Verify a Standard Webhooks request; returns the message id (for replay protection). The
/// signature header may list several space-separated signatures (key rotation): one valid
/// `v1` entry is enough.
pub fn verify_webhook(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<String, SignatureError> {
    let id = id
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let sigs = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts = fresh(ts, "webhook-timestamp", now)?;
    let expected = sign_webhook(secret, id, ts, body).signature;
    let mut any_v1 = false;
    for s in sigs.split_whitespace() {
        if s.starts_with("v1,") {
            any_v1 = true;
            if constant_time_eq(expected.as_bytes(), s.as_bytes()) {
                return Ok(id.to_string());
            }
        }
    }
    if any_v1 {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::Malformed("webhook-signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // The worked example of api.slack.com/authentication/verifying-requests-from-slack.
        let secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let ts = "1531420618";
        assert_eq!(
            slack_signature(&secret, ts, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        let now = 1531420618 + 10;
        let good = slack_signature(&secret, ts, body);
        assert!(verify_slack(&secret, Some(ts), Some(&good), body, now).is_ok());
        let mut tampered = body.to_vec();
        tampered[6] = b'X';
        assert_eq!(
            verify_slack(&secret, Some(ts), Some(&good), &tampered, now),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_slack(&secret, Some(ts), Some(&good), body, now + 400),
            Err(SignatureError::Stale { .. })
        ));
        let other = Secret::new("another-secret");
        assert_eq!(
            verify_slack(&other, Some(ts), Some(&good), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_slack(&secret, None, Some(&good), body, now),
            Err(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))
        );
    }

    #[test]
    fn standard_webhooks_round_trip_and_reference_vector() {
        // The reference test vector of the standard-webhooks libraries.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let h = sign_webhook(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            h.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let now = 1614265330 + 60;
        let ok = verify_webhook(
            &secret,
            Some(&h.id),
            Some("1614265330"),
            Some(&format!("v1,bm90IGl0 {}", h.signature)),
            body,
            now,
        );
        assert_eq!(ok.unwrap(), "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(
            verify_webhook(
                &secret,
                Some("other_id"),
                Some("1614265330"),
                Some(&h.signature),
                body,
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_webhook(
                &secret,
                Some(&h.id),
                Some("1614265330"),
                Some(&h.signature),
                body,
                now + 301
            ),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify_webhook(
                &secret,
                Some(&h.id),
                Some("1614265330"),
                Some("v2,abc"),
                body,
                now
            ),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        // A plain (non-whsec) secret is used as raw bytes.
        let plain = Secret::new("s3cret");
        let h = sign_webhook(&plain, "x", now, b"{}");
        assert!(
            verify_webhook(
                &plain,
                Some("x"),
                Some(&now.to_string()),
                Some(&h.signature),
                b"{}",
                now
            )
            .is_ok()
        );
    }
}
