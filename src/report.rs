//! The HTML drift report: one self-contained page (inline CSS and SVG, no scripts, nothing
//! fetched) per check, rendered from the stored JSON report so `/reports/{cycle}` works for
//! any past cycle. Features are sorted by severity — drifted first, then by corrected
//! p-value or distance — each with its reference/current histogram overlaid, the statistic,
//! p-value, threshold and verdict; the quality findings and the champion's performance come
//! before them. People look at pictures first.

use std::fmt::Write as _;

use serde_json::Value;

use crate::drift::{FeatureDrift, Histogram};

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const REFERENCE_COLOUR: &str = "#4c78a8";
const CURRENT_COLOUR: &str = "#f58518";

/// An SVG bar chart with reference and current bars side by side per bin.
fn histogram_svg(h: &Histogram) -> String {
    let (w, hgt, pad) = (560.0, 160.0, 24.0);
    let n = h.labels.len().max(1) as f64;
    let top = h
        .reference
        .iter()
        .chain(&h.current)
        .fold(0.0f64, |m, v| m.max(*v))
        .max(1e-12);
    let slot = (w - 2.0 * pad) / n;
    let bar = (slot * 0.42).max(1.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img" aria-label="histogram">"#,
        hgt + 30.0
    );
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{hgt}" x2="{}" y2="{hgt}" stroke="#888"/>"##,
        w - pad
    );
    for (i, label) in h.labels.iter().enumerate() {
        let x = pad + slot * i as f64;
        for (k, (values, colour)) in [
            (&h.reference, REFERENCE_COLOUR),
            (&h.current, CURRENT_COLOUR),
        ]
        .into_iter()
        .enumerate()
        {
            let v = values.get(i).copied().unwrap_or(0.0);
            let bh = (hgt - 10.0) * v / top;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{bh:.1}" fill="{colour}"><title>{}: {:.1}%</title></rect>"#,
                x + bar * k as f64,
                hgt - bh,
                escape(label),
                v * 100.0
            );
        }
        let every = (h.labels.len() / 10).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{}" font-size="9" fill="#555">{}</text>"##,
                x,
                hgt + 14.0,
                escape(&label.chars().take(12).collect::<String>())
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn severity(f: &FeatureDrift) -> (bool, f64) {
    // Drifted first; then smaller p-values, or larger distances relative to the threshold.
    let rank = match f.p_adjusted {
        Some(p) => p,
        None => 1.0 - (f.statistic / f.threshold.max(1e-12)).min(1.0),
    };
    (!f.drifted, rank)
}

fn number(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "–".into())
}

/// Render the stored report body of a cycle (or a `retraind check` report) as HTML.
pub fn render(body: &Value) -> String {
    let features: Vec<FeatureDrift> = body["drift"]["features"]
        .as_array()
        .or_else(|| body["features"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|f| serde_json::from_value(f.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let dataset = if body["drift"]["dataset"].is_object() {
        &body["drift"]["dataset"]
    } else {
        &body["dataset"]
    };
    let title = match (body["pipeline"].as_str(), body["cycle"].as_i64()) {
        (Some(p), Some(c)) => format!("retraind · {p} · cycle {c}"),
        _ => "retraind · drift report".to_string(),
    };
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}}
h1{{font-size:1.4rem}} h2{{font-size:1.1rem;margin-top:2rem}}
.feature{{border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}}
.drift{{border-color:#d62728;background:#fff5f5}} .verdict{{font-weight:bold}}
.drift .verdict{{color:#d62728}} table{{border-collapse:collapse}} td,th{{padding:.2rem .6rem;text-align:left}}
.legend span{{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}}
</style></head><body><h1>{}</h1>"#,
        escape(&title),
        escape(&title)
    );
    if let Some(date) = body["date"].as_str() {
        let _ = write!(html, "<p>Window <b>{}</b>.</p>", escape(date));
    }
    if let Some(reasons) = body["decision"]["reasons"].as_array() {
        let verdict = body["decision"]["verdict"].as_str().unwrap_or("");
        let _ = write!(html, "<h2>Decision: {}</h2><ul>", escape(verdict));
        for r in reasons.iter().filter_map(Value::as_str) {
            let _ = write!(html, "<li>{}</li>", escape(r));
        }
        html.push_str("</ul>");
    }
    let _ = write!(
        html,
        "<p>Dataset: <b>{}</b> — {} of {} features drifted ({}), correction {}.</p>",
        if dataset["drifted"].as_bool() == Some(true) {
            "drift"
        } else {
            "no drift"
        },
        dataset["drifted_features"].as_u64().unwrap_or(0),
        features.len(),
        number(&dataset["drifted_share"]),
        escape(dataset["correction"].as_str().unwrap_or("-"))
    );
    if let Some(findings) = body["quality"]["findings"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        html.push_str("<h2>Data quality</h2><ul>");
        for f in findings {
            let _ = write!(
                html,
                "<li><b>{}</b>: {}</li>",
                escape(f["severity"].as_str().unwrap_or("")),
                escape(f["message"].as_str().unwrap_or(""))
            );
        }
        html.push_str("</ul>");
    }
    let perf = &body["performance"];
    if perf.is_object() {
        let status = perf["status"].as_str().unwrap_or("unknown");
        let _ = write!(
            html,
            "<h2>Champion performance</h2><table><tr><th>metric</th><th>current</th><th>baseline</th><th>threshold</th><th>labels</th><th>test</th><th>p-value</th><th>verdict</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table><p>{}</p>",
            escape(perf["metric"].as_str().unwrap_or("")),
            number(&perf["current"]),
            number(&perf["baseline"]),
            number(&perf["threshold"]),
            perf["labels"].as_u64().unwrap_or(0),
            escape(perf["test"].as_str().unwrap_or("")),
            number(&perf["p_value"]),
            if status == "degraded" {
                "<b>degraded</b>".to_string()
            } else {
                escape(&status.replace('_', " "))
            },
            escape(perf["detail"].as_str().unwrap_or(""))
        );
    }
    let _ = write!(
        html,
        r#"<h2>Features</h2><p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference<span style="background:{CURRENT_COLOUR}"></span>current</p>"#
    );
    let mut sorted: Vec<&FeatureDrift> = features.iter().collect();
    sorted.sort_by(|a, b| {
        let (x, y) = (severity(a), severity(b));
        x.0.cmp(&y.0).then(x.1.total_cmp(&y.1))
    });
    for f in sorted {
        let _ = write!(
            html,
            r#"<div class="feature{}"><h3>{} <small>({}, {})</small> — <span class="verdict">{}</span></h3><table><tr><th>statistic</th><td>{:.4}</td><th>p-value (corrected)</th><td>{}</td><th>threshold</th><td>{}</td></tr>"#,
            if f.drifted { " drift" } else { "" },
            escape(&f.name),
            f.kind.as_str(),
            f.method,
            if f.drifted { "drift" } else { "no drift" },
            f.statistic,
            f.p_adjusted
                .map(|p| format!("{p:.3e}"))
                .unwrap_or_else(|| "–".into()),
            f.threshold
        );
        if let Some(e) = &f.effect {
            let _ = write!(
                html,
                "<tr><th>effect ({})</th><td>{:.4}</td><th>minimum</th><td>{}</td></tr>",
                e.method, e.value, e.minimum
            );
        }
        html.push_str("</table>");
        if !f.unseen_categories.is_empty() {
            let names: Vec<String> = f.unseen_categories.iter().map(|c| escape(c)).collect();
            let _ = write!(html, "<p>New categories: {}</p>", names.join(", "));
        }
        if let Some(h) = &f.histogram {
            html.push_str(&histogram_svg(h));
        }
        html.push_str("</div>");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;
    use crate::drift::DriftConfig;

    fn table(x: Vec<f64>, seg: Vec<&str>) -> Table {
        Table::from_columns(
            vec![("x".into(), x)],
            vec![("<seg>".into(), seg.into_iter().map(String::from).collect())],
        )
    }

    #[test]
    fn renders_a_histogram_per_feature_drifted_first_and_escaped() {
        let r = table(
            (0..400).map(|i| f64::from(i % 20)).collect(),
            ["a", "b"].repeat(200),
        );
        let c = table(
            (0..400).map(|i| f64::from(i % 20) + 8.0).collect(),
            ["a", "b"].repeat(200),
        );
        let drift = crate::drift::detect(&r, &c, &DriftConfig::default(), 10);
        let body = serde_json::json!({"pipeline": "p<1>", "cycle": 7, "date": "2026-11-27", "drift": drift,
            "decision": {"verdict": "retrain", "reasons": ["data drift in 1 of 2 features"]}});
        let html = render(&body);
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert!(html.contains("retraind · p&lt;1&gt; · cycle 7"));
        assert!(html.contains("&lt;seg&gt;") && !html.contains("<seg>"));
        // The drifted numerical feature comes before the quiet categorical one.
        assert!(html.find("<h3>x ").unwrap() < html.find("<h3>&lt;seg&gt;").unwrap());
        assert!(html.contains("Decision: retrain"));
        assert!(!html.contains("<script"), "self-contained and inert");
    }
}
