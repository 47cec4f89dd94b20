//! Slack: approval requests as Block Kit messages with Approve / Reject buttons
//! (`chat.postMessage` with the app's bot token), or — for teams without an app — a
//! notification through an incoming webhook with the CLI/API instructions. The buttons call
//! back to `POST /slack/interactions` (see [`crate::server`]), which verifies the v0
//! signature ([`crate::signing::verify_slack`]) before [`parse_interaction`] reads the body,
//! and then replaces the buttons via the payload's `response_url` ([`decided_message`]).

use serde_json::{Value, json};

use super::{ApprovalChannel, ApprovalError, ApprovalRequest, BoxFuture, LogChannel, Notice};
use crate::approval::ApprovalDecision;
use crate::secret::{Secret, SecretSource};
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[slack]` as written.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawSlack {
    pub api_url: Option<String>,
    pub channel: Option<String>,
    pub bot_token_file: Option<String>,
    pub bot_token_env: Option<String>,
    pub signing_secret_file: Option<String>,
    pub signing_secret_env: Option<String>,
    pub incoming_webhook_file: Option<String>,
    pub incoming_webhook_env: Option<String>,
}

/// The Slack app (requests with buttons) or incoming webhook (notifications only).
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Slack Web API base, `https://slack.com/api` (a fake server's in tests).
    pub api_url: String,
    /// Default channel for approval requests (`approval.slack_channel` overrides it).
    pub channel: Option<String>,
    pub bot_token: Option<SecretSource>,
    pub signing_secret: Option<SecretSource>,
    pub incoming_webhook: Option<SecretSource>,
}

/// Slack's Web API.
const API_URL: &str = "https://slack.com/api";

impl SlackConfig {
    /// Validate `raw` (the checker is at `slack`).
    pub fn from_raw(raw: RawSlack, files: Files, c: &mut Checker) -> SlackConfig {
        let api_url = raw
            .api_url
            .unwrap_or_else(|| API_URL.to_string())
            .trim_end_matches('/')
            .to_string();
        c.url("api_url", &api_url, "");
        let mut secret =
            |key: &str, file: &Option<String>, env: &Option<String>, credential: &str| {
                files.secret(c, key, file, env, Some(credential))
            };
        let bot_token = secret(
            "bot_token",
            &raw.bot_token_file,
            &raw.bot_token_env,
            "slack-bot-token",
        );
        let signing_secret = secret(
            "signing_secret",
            &raw.signing_secret_file,
            &raw.signing_secret_env,
            "slack-signing-secret",
        );
        let incoming_webhook = secret(
            "incoming_webhook",
            &raw.incoming_webhook_file,
            &raw.incoming_webhook_env,
            "slack-incoming-webhook",
        );
        if bot_token.is_none() && incoming_webhook.is_none() {
            c.problem("", "set bot_token_file (an app with Approve/Reject buttons) or incoming_webhook_file (notifications only)");
        }
        if bot_token.is_some() && signing_secret.is_none() {
            c.problem("signing_secret_file", "missing; the buttons' callbacks at /slack/interactions are verified with the app's signing secret");
        }
        SlackConfig {
            api_url,
            channel: raw.channel,
            bot_token,
            signing_secret,
            incoming_webhook,
        }
    }
}

/// The Slack channel.
pub struct Slack {
    api_url: String,
    default_channel: Option<String>,
    bot_token: Option<Secret>,
    incoming_webhook: Option<Secret>,
    client: reqwest::Client,
}

impl Slack {
    pub fn new(
        api_url: String,
        default_channel: Option<String>,
        bot_token: Option<Secret>,
        incoming_webhook: Option<Secret>,
    ) -> Slack {
        Slack {
            api_url,
            default_channel,
            bot_token,
            incoming_webhook,
            client: super::http_client(std::time::Duration::from_secs(10)),
        }
    }

    async fn post(
        &self,
        channel: Option<&str>,
        text: String,
        blocks: Value,
    ) -> Result<(), ApprovalError> {
        let err = |message: String| ApprovalError {
            channel: "slack",
            message,
        };
        if let Some(token) = &self.bot_token {
            let channel = channel.or(self.default_channel.as_deref()).ok_or_else(|| {
                err("no Slack channel: set slack.channel or approval.slack_channel".into())
            })?;
            let body = json!({ "channel": channel, "text": text, "blocks": blocks });
            let url = format!("{}/chat.postMessage", self.api_url);
            let answer = super::post_json(
                &self.client,
                "slack",
                &url,
                Some(token.expose()),
                &[],
                body.to_string().into_bytes(),
            )
            .await?;
            // The Web API answers 200 with {"ok": false, "error": "..."} on failure.
            if answer["ok"].as_bool() != Some(true) {
                return Err(err(format!(
                    "chat.postMessage refused: {}",
                    answer["error"].as_str().unwrap_or("no `ok` in the answer")
                )));
            }
            return Ok(());
        }
        if let Some(hook) = &self.incoming_webhook {
            let body = json!({ "text": text, "blocks": blocks });
            super::post_json(
                &self.client,
                "slack",
                hook.expose(),
                None,
                &[],
                body.to_string().into_bytes(),
            )
            .await?;
            return Ok(());
        }
        Err(err(
            "neither a bot token nor an incoming webhook is configured".into(),
        ))
    }
}

impl ApprovalChannel for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let buttons = self.bot_token.is_some();
            self.post(
                request.slack_channel.as_deref(),
                summary(request),
                request_blocks(request, buttons),
            )
            .await
        })
    }

    fn notify<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let blocks = json!([{ "type": "section", "text": { "type": "mrkdwn", "text": mrkdwn(&notice.text) } }]);
            self.post(
                notice.slack_channel.as_deref(),
                mrkdwn(&notice.text),
                blocks,
            )
            .await
        })
    }
}

/// The message's fallback text (notifications, screen readers).
pub fn summary(r: &ApprovalRequest) -> String {
    format!(
        "retraind: v{} of {} awaits approval (cycle {})",
        r.version, r.pipeline, r.cycle
    )
}

/// Text from the data or the config as Slack shows it, not as Slack acts on it: `&`, `<` and
/// `>` escaped as Slack's mrkdwn requires, so a feature named `<!channel>` pings nobody and a
/// reason cannot forge a link.
pub fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())
}

/// The Block Kit blocks of an approval request: trigger, champion vs challenger table, gate
/// checks, report link, and the buttons (or, without an app, the commands that answer it).
pub fn request_blocks(r: &ApprovalRequest, buttons: bool) -> Value {
    let mut table = String::from("```\nmetric          champion   challenger\n");
    for m in &r.metrics {
        table.push_str(&format!(
            "{:<15} {:>9}   {:>10}\n",
            mrkdwn(&m.metric.to_string()),
            num(m.champion),
            num(Some(m.challenger))
        ));
    }
    table.push_str("```");
    let checks: Vec<String> = r
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}",
                if c.passed { "✅" } else { "❌" },
                mrkdwn(&c.name),
                mrkdwn(&c.detail)
            )
        })
        .collect();
    let champion = r
        .champion_version
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| "none".into());
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": format!("{}: approve v{}?", r.pipeline, r.version) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("*Trigger:* {}\n*Champion:* {champion} → *challenger:* v{}\n*Expires:* {}", mrkdwn(&r.trigger), r.version, r.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": table } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("*Gate:* {}\n{}", mrkdwn(&r.gate), checks.join("\n")) } }),
    ];
    if let Some(url) = &r.report_url {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("<{url}|Drift report of cycle {}>", r.cycle) }] }));
    }
    if buttons {
        let value = r.cycle.to_string();
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("retraind_approval_{}", r.cycle),
            "elements": [
                { "type": "button", "action_id": "approve", "style": "primary", "value": value, "text": { "type": "plain_text", "text": "Approve" } },
                { "type": "button", "action_id": "reject", "style": "danger", "value": value, "text": { "type": "plain_text", "text": "Reject" } }
            ]
        }));
    } else {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": mrkdwn(&LogChannel::message(r)) }] }));
    }
    Value::Array(blocks)
}

/// A button press, read from a verified interaction body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub cycle: i64,
    pub decision: ApprovalDecision,
    pub user_id: String,
    pub username: String,
    pub response_url: Option<String>,
}

/// Why an interaction body is not a button press of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("body has no `payload` form field")]
    NoPayload,
    #[error("`payload` is not JSON: {0}")]
    Json(String),
    #[error("not a retraind approval button ({0})")]
    NotOurs(String),
}

/// Parse `application/x-www-form-urlencoded` `payload=<json>` of a `block_actions` callback.
pub fn parse_interaction(body: &[u8]) -> Result<Interaction, InteractionError> {
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or(InteractionError::NoPayload)?;
    let v: Value =
        serde_json::from_str(&payload).map_err(|e| InteractionError::Json(e.to_string()))?;
    if v["type"] != "block_actions" {
        return Err(InteractionError::NotOurs(format!("type {}", v["type"])));
    }
    let action = &v["actions"][0];
    let decision = match action["action_id"].as_str() {
        Some("approve") => ApprovalDecision::Approve,
        Some("reject") => ApprovalDecision::Reject,
        other => return Err(InteractionError::NotOurs(format!("action_id {other:?}"))),
    };
    let cycle = action["value"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| InteractionError::NotOurs("button value is not a cycle id".into()))?;
    let user_id = v["user"]["id"].as_str().unwrap_or_default().to_string();
    if user_id.is_empty() {
        return Err(InteractionError::NotOurs("no user id".into()));
    }
    Ok(Interaction {
        cycle,
        decision,
        username: v["user"]["username"]
            .as_str()
            .or(v["user"]["name"].as_str())
            .unwrap_or_default()
            .to_string(),
        user_id,
        response_url: v["response_url"].as_str().map(String::from),
    })
}

impl Interaction {
    /// Who clicked: recorded as `@username` (the user id when Slack sends no name), and
    /// matched against the allow-list by id or name ([`crate::approval::allowed`]).
    pub fn approver(&self) -> super::Approver {
        super::Approver {
            name: if self.username.is_empty() {
                self.user_id.clone()
            } else {
                format!("@{}", self.username)
            },
            id: Some(self.user_id.clone()),
        }
    }
}

/// The message that replaces the buttons once a decision is recorded.
pub fn decided_message(text: &str) -> Value {
    json!({
        "replace_original": true,
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }]
    })
}

/// Post the decision to the interaction's `response_url` (best effort).
pub async fn respond(response_url: &str, text: &str) -> Result<(), ApprovalError> {
    let client = super::http_client(std::time::Duration::from_secs(10));
    super::post_json(
        &client,
        "slack",
        response_url,
        None,
        &[],
        decided_message(text).to_string().into_bytes(),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(payload: &Value) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    /// Names and reasons come from the data: Slack must show them, not act on them.
    #[test]
    fn text_from_the_data_cannot_ping_or_link() {
        let mut r = crate::approval::sample_request();
        r.trigger = "drift in <!channel> & <https://evil.example|click>".into();
        r.gate = "passed <@U123>".into();
        let text = request_blocks(&r, false).to_string();
        assert!(
            text.contains("drift in &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"),
            "{text}"
        );
        assert!(text.contains("passed &lt;@U123&gt;"), "{text}");
        assert!(
            !text.contains("<!channel>") && !text.contains("<@U123>"),
            "{text}"
        );
        // Our own link stays a link.
        let r = crate::approval::sample_request();
        assert!(
            request_blocks(&r, true)
                .to_string()
                .contains("<https://retraind.example.com/reports/7|")
        );
    }

    #[test]
    fn blocks_carry_trigger_table_gate_link_and_buttons() {
        let r = crate::approval::sample_request();
        let b = request_blocks(&r, true);
        let text = b.to_string();
        assert!(text.contains("feature_a (ks p=1.2e-9)"));
        assert!(
            text.contains("accuracy           0.7960       0.9690"),
            "{text}"
        );
        assert!(text.contains("min_accuracy: accuracy 0.9690 vs floor 0.9000"));
        assert!(text.contains("<https://retraind.example.com/reports/7|Drift report of cycle 7>"));
        let actions = b.as_array().unwrap().last().unwrap();
        assert_eq!(actions["elements"][0]["action_id"], "approve");
        assert_eq!(actions["elements"][1]["value"], "7");
        // Incoming-webhook mode: no buttons, the commands instead.
        let b = request_blocks(&r, false).to_string();
        assert!(
            !b.contains("\"actions\"")
                && b.contains("retraind approve 7 --approver \\\"$(whoami)\\\"")
        );
    }

    #[test]
    fn interactions_parse_and_the_allow_list_matches_ids_and_names() {
        let payload = json!({
            "type": "block_actions",
            "user": { "id": "U123", "username": "alice" },
            "actions": [{ "action_id": "approve", "block_id": "retraind_approval_7", "value": "7", "action_ts": "1.2" }],
            "response_url": "https://hooks.slack.com/actions/T/1/x"
        });
        let i = parse_interaction(&form(&payload)).unwrap();
        assert_eq!(
            (i.cycle, i.decision, i.username.as_str()),
            (7, ApprovalDecision::Approve, "alice")
        );
        let who = i.approver();
        assert_eq!(
            (who.name.as_str(), who.id.as_deref()),
            ("@alice", Some("U123"))
        );
        let allowed = |list: &[&str]| {
            let list: Vec<String> = list.iter().map(|a| a.to_string()).collect();
            crate::approval::allowed(&list, &who, false)
        };
        assert!(allowed(&["@alice"]));
        assert!(allowed(&["U123"]));
        assert!(!allowed(&["bob"]));
        assert!(!allowed(&[]));
        assert_eq!(parse_interaction(b"x=1"), Err(InteractionError::NoPayload));
        let other = json!({ "type": "view_submission" });
        assert!(matches!(
            parse_interaction(&form(&other)),
            Err(InteractionError::NotOurs(_))
        ));
        let bad = json!({ "type": "block_actions", "user": {"id": "U1"}, "actions": [{ "action_id": "delete", "value": "7" }] });
        assert!(matches!(
            parse_interaction(&form(&bad)),
            Err(InteractionError::NotOurs(_))
        ));
    }
}
