//! Properties with shrinking (proptest): the statistics (KS D is the largest ECDF gap found
//! by brute force, symmetric in its samples, p-values in [0, 1]; Benjamini–Hochberg is
//! monotone, never below the raw p-value, never above 1), the signature verifiers (a signed
//! message verifies, any changed byte or header does not), the config parser (any text
//! is a config or a list of problems, never a panic), the approval decision parsers (a
//! well-formed decision reads back as sent, any bytes are an answer or an error, never a
//! panic) and the report renderer (any stored report renders; every name in it is escaped).

use proptest::prelude::*;
use retraind::secret::Secret;
use retraind::signing;
use retraind::stats::{self, Correction};

/// Small integers as floats, so samples have ties.
fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-6i32..6).prop_map(f64::from), 1..60)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// sup |F_a(x) − F_b(x)| over every observed x, counting.
fn brute_force_d(a: &[f64], b: &[f64]) -> f64 {
    let cdf = |s: &[f64], x: f64| s.iter().filter(|v| **v <= x).count() as f64 / s.len() as f64;
    a.iter()
        .chain(b)
        .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn ks_d_is_the_largest_ecdf_gap_and_symmetric(a in sample(), b in sample()) {
        let (a, b) = (sorted(a), sorted(b));
        let d = stats::ks_statistic(&a, &b);
        prop_assert!((d - brute_force_d(&a, &b)).abs() < 1e-12, "d {d} vs {}", brute_force_d(&a, &b));
        prop_assert_eq!(d, stats::ks_statistic(&b, &a));
    }

    #[test]
    fn ks_p_values_are_probabilities_and_symmetric(a in sample(), b in sample()) {
        let (a, b) = (sorted(a), sorted(b));
        let d = stats::ks_statistic(&a, &b);
        let (p, _) = stats::ks_p_value(d, a.len(), b.len());
        let (q, _) = stats::ks_p_value(d, b.len(), a.len());
        prop_assert!((0.0..=1.0).contains(&p), "p {p}");
        prop_assert!((p - q).abs() < 1e-12, "{p} vs {q}");
    }

    #[test]
    fn benjamini_hochberg_is_monotone_and_bounded(p in prop::collection::vec(0.0f64..=1.0, 1..40)) {
        let adj = stats::adjust(&p, Correction::BenjaminiHochberg);
        for i in 0..p.len() {
            // `p·n/n` may round one ulp below `p`, as it does in scipy's arithmetic.
            prop_assert!(adj[i] >= p[i] * (1.0 - 1e-15) && adj[i] <= 1.0, "p {} adj {}", p[i], adj[i]);
            for j in 0..p.len() {
                if p[i] <= p[j] {
                    prop_assert!(adj[i] <= adj[j], "p {} <= {} but adj {} > {}", p[i], p[j], adj[i], adj[j]);
                }
            }
        }
    }

    #[test]
    fn a_signed_webhook_verifies_and_any_change_does_not(
        body in prop::collection::vec(any::<u8>(), 0..200),
        id in "[a-z0-9_-]{1,20}",
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let now = 1_700_000_000;
        let h = signing::sign_webhook(&secret, &id, now, &body);
        let ts = now.to_string();
        let ok = signing::verify_webhook(&secret, Some(&id), Some(&ts), Some(&h.signature), &body, now);
        prop_assert_eq!(ok.ok(), Some(id.clone()));
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1 << bit;
            let bad = signing::verify_webhook(&secret, Some(&id), Some(&ts), Some(&h.signature), &changed, now);
            prop_assert!(bad.is_err());
        }
        let other_id = format!("{id}x");
        prop_assert!(signing::verify_webhook(&secret, Some(&other_id), Some(&ts), Some(&h.signature), &body, now).is_err());
        let late = (now + 3600).to_string();
        prop_assert!(signing::verify_webhook(&secret, Some(&id), Some(&late), Some(&h.signature), &body, now).is_err());
    }

    #[test]
    fn a_signed_slack_request_verifies_and_any_change_does_not(
        body in prop::collection::vec(any::<u8>(), 1..200),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
        let now = 1_700_000_000i64;
        let ts = now.to_string();
        let sig = signing::slack_signature(&secret, &ts, &body);
        prop_assert!(signing::verify_slack(&secret, Some(&ts), Some(&sig), &body, now).is_ok());
        let mut changed = body.clone();
        changed[flip.index(body.len())] ^= 1 << bit;
        prop_assert!(signing::verify_slack(&secret, Some(&ts), Some(&sig), &changed, now).is_err());
        let stale = (now - 3600).to_string();
        let stale_sig = signing::slack_signature(&secret, &stale, &body);
        prop_assert!(signing::verify_slack(&secret, Some(&stale), Some(&stale_sig), &body, now).is_err());
    }

    /// Any text — TOML-looking or not — is a config or a list of problems naming the file.
    #[test]
    fn the_config_parser_never_panics(text in config_text()) {
        let path = std::path::Path::new("/etc/retraind/fuzzed.toml");
        if let Err(e) = retraind::config::Config::parse(&text, path, &[]) {
            prop_assert!(e.to_string().contains("fuzzed.toml"), "{e}");
        }
    }
}

/// Config-shaped text: known tables and keys with values of every type, or junk.
fn config_text() -> impl Strategy<Value = String> {
    let table = prop::sample::select(vec![
        "[daemon]",
        "[server]",
        "[store]",
        "[[pipeline]]",
        "[pipeline.data]",
        "[pipeline.drift]",
        "[pipeline.performance]",
        "[pipeline.gate]",
        "[pipeline.approval]",
        "[pipeline.deploy]",
        "[pipeline.guards]",
        "[pipeline.train]",
        "[pipeline.train.burn]",
        "[slack]",
        "[webhook]",
    ]);
    let key = prop::sample::select(vec![
        "name",
        "schedule",
        "reference",
        "current",
        "target",
        "alpha",
        "correction",
        "method",
        "min_rows",
        "watch_for",
        "failure_limit",
        "max_retrains",
        "cooldown",
        "mode",
        "approvers",
        "epochs",
        "hidden",
        "metric",
        "min_accuracy",
        "url",
        "listen",
        "timezone",
        "expires",
    ]);
    let value = prop_oneof![
        Just("\"\"".to_string()),
        "\"[ -~]{0,12}\"".prop_map(|s| s),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("true".to_string()),
        Just("[\"1/24h\", \"x\"]".to_string()),
        Just("[1, -2, 300000000000]".to_string()),
        Just("{ a = 1 }".to_string()),
        "[ -~]{0,16}".prop_map(|s| s),
    ];
    let line = prop_oneof![
        table.prop_map(|t| t.to_string()),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
    ];
    prop::collection::vec(line, 0..25).prop_map(|lines| lines.join("\n"))
}

/// Text of every kind a name can hold: HTML, quotes, JSON and form metacharacters, unicode.
fn any_text() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-zA-Z0-9 <>&\"'=%+/\\{}:,é😀]{0,24}")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        any_text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "pipeline",
                    "cycle",
                    "date",
                    "decision",
                    "verdict",
                    "reasons",
                    "features",
                    "drift",
                    "dataset",
                    "quality",
                    "performance",
                    "name",
                    "kind",
                    "statistic",
                    "p_value",
                    "p_adjusted",
                    "threshold",
                    "drifted",
                    "histogram",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A decision sent to `POST /hooks/approval` reads back as sent; a blank approver is
    /// refused by name; any bytes are a decision or an error, never a panic.
    #[test]
    fn a_webhook_decision_reads_back_as_sent(
        cycle in any::<i64>(),
        approve in any::<bool>(),
        // Blank names too (spaces, tabs): refused like the empty one.
        approver in prop_oneof![any_text(), "[ \t]{1,3}"],
        reason in any_text(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        use retraind::approval::ApprovalDecision;
        let decision = if approve { ApprovalDecision::Approve } else { ApprovalDecision::Reject };
        let body = serde_json::json!({
            "cycle": cycle, "decision": decision, "approver": approver, "reason": reason,
        });
        let parsed = retraind::approval::webhook::parse_decision(body.to_string().as_bytes());
        if approver.trim().is_empty() {
            prop_assert!(parsed.unwrap_err().contains("approver"));
        } else {
            let d = parsed.map_err(TestCaseError::fail)?;
            prop_assert_eq!((d.cycle, d.decision, d.approver, d.reason), (cycle, decision, approver, reason));
        }
        let _ = retraind::approval::webhook::parse_decision(&junk);
    }

    /// A Slack button press reads back as sent (cycle, decision, who); any bytes are an
    /// interaction or an error, never a panic.
    #[test]
    fn a_slack_button_press_reads_back_as_sent(
        cycle in any::<i64>(),
        approve in any::<bool>(),
        user_id in "[A-Z0-9]{1,12}",
        username in any_text(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        use retraind::approval::ApprovalDecision;
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": user_id, "username": username},
            "actions": [{"action_id": if approve { "approve" } else { "reject" }, "value": cycle.to_string()}],
            "response_url": "https://hooks.slack.com/actions/T/1/x",
        });
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let i = retraind::approval::slack::parse_interaction(body.as_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decision = if approve { ApprovalDecision::Approve } else { ApprovalDecision::Reject };
        prop_assert_eq!((i.cycle, i.decision, i.user_id, i.username), (cycle, decision, user_id, username));
        let _ = retraind::approval::slack::parse_interaction(&junk);
    }

    /// Any stored report body renders (read leniently, never a panic).
    #[test]
    fn any_stored_report_renders(body in any_json()) {
        let html = retraind::report::render_stored(&body);
        prop_assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"), "{html}");
    }

    /// A report of features with any names shows every name, escaped: no name's markup
    /// reaches the page.
    #[test]
    fn every_feature_name_is_escaped(
        names in prop::collection::btree_set(any_text(), 1..5),
        shift in 0.0f64..3.0,
    ) {
        let column = |offset: f64| -> Vec<f64> { (0..60).map(|i| f64::from(i % 17) + offset).collect() };
        // Each name between two § (never in the page's own markup), so a raw name is found
        // only where the renderer forgot to escape it.
        let names: Vec<String> = names.iter().map(|n| format!("§{n}§")).collect();
        let named = |offset: f64| -> Vec<(String, Vec<f64>)> {
            names.iter().map(|n| (n.clone(), column(offset))).collect()
        };
        let reference = retraind::data::Table::from_columns(named(0.0), vec![]);
        let current = retraind::data::Table::from_columns(named(shift), vec![]);
        let drift = retraind::drift::detect(&reference, &current, &retraind::drift::DriftConfig::default(), 10);
        let report = retraind::report::Report {
            pipeline: Some("§<p>§".into()),
            cycle: Some(1),
            date: None,
            decision: None,
            features: drift.features,
            dataset: Some(drift.dataset),
            quality: None,
            performance: None,
            estimate: None,
        };
        let html = retraind::report::render(&report);
        for n in &names {
            prop_assert!(html.contains(&retraind::report::escape(n)), "{n:?} missing");
            if n.contains('<') || n.contains('&') {
                prop_assert!(!html.contains(n.as_str()), "{n:?} unescaped");
            }
        }
        prop_assert!(!html.contains("§<p>§"));
    }
}
