//! The HTML drift report: one self-contained page (inline CSS and SVG, no scripts, nothing
//! fetched) per check, rendered from the stored JSON report so `/reports/{cycle}` works for
//! any past cycle. Features are sorted by severity — drifted first, then by corrected
//! p-value or distance — each with its reference/current histogram overlaid, the statistic,
//! p-value, threshold and verdict; the quality findings and the champion's performance come
//! before them. People look at pictures first.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::decision::Decision;
use crate::drift::{DatasetDrift, FeatureDrift, Histogram};
use crate::estimate::EstimateReport;
use crate::performance::Assessment;
use crate::quality::QualityReport;
use crate::records::CheckReport;

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

/// A value's name as it is serialised (`insufficient_labels`, `two_proportion_z` …).
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn number(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into())
}

/// What a report page shows: a cycle's check, or a `retraind check` of two files.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub pipeline: Option<String>,
    pub cycle: Option<i64>,
    pub date: Option<String>,
    pub decision: Option<Decision>,
    pub features: Vec<FeatureDrift>,
    pub dataset: Option<DatasetDrift>,
    pub quality: Option<QualityReport>,
    pub performance: Option<Assessment>,
    /// A label-free performance estimate.
    pub estimate: Option<EstimateReport>,
}

impl From<&CheckReport> for Report {
    fn from(r: &CheckReport) -> Report {
        Report {
            pipeline: Some(r.pipeline.clone()),
            cycle: Some(r.cycle),
            date: Some(r.date.clone()),
            decision: Some(r.decision.clone()),
            features: r.drift.features.clone(),
            dataset: Some(r.drift.dataset.clone()),
            quality: Some(r.quality.clone()),
            performance: r.performance.clone(),
            estimate: r.estimate.clone(),
        }
    }
}

/// A stored report body as written (by this release or an older one, or mangled): each
/// section is read on its own, and one that does not read is left out of the page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Stored {
    #[serde(deserialize_with = "crate::records::lenient")]
    pipeline: Option<String>,
    #[serde(deserialize_with = "crate::records::lenient")]
    cycle: Option<i64>,
    #[serde(deserialize_with = "crate::records::lenient")]
    date: Option<String>,
    #[serde(deserialize_with = "crate::records::lenient")]
    decision: Option<Decision>,
    #[serde(deserialize_with = "crate::records::lenient")]
    drift: Option<StoredDrift>,
    /// `retraind check --format json` keeps the drift sections at the top.
    #[serde(deserialize_with = "crate::records::lenient_list")]
    features: Vec<FeatureDrift>,
    #[serde(deserialize_with = "crate::records::lenient")]
    dataset: Option<DatasetDrift>,
    #[serde(deserialize_with = "crate::records::lenient")]
    quality: Option<QualityReport>,
    #[serde(deserialize_with = "crate::records::lenient")]
    performance: Option<Assessment>,
    #[serde(deserialize_with = "crate::records::lenient")]
    estimate: Option<EstimateReport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoredDrift {
    #[serde(deserialize_with = "crate::records::lenient_list")]
    features: Vec<FeatureDrift>,
    #[serde(deserialize_with = "crate::records::lenient")]
    dataset: Option<DatasetDrift>,
}

impl Report {
    /// A stored report body, read leniently.
    pub fn from_stored(body: &Value) -> Report {
        let s: Stored = serde_json::from_value(body.clone()).unwrap_or_default();
        let drift = s.drift.unwrap_or_default();
        let use_drift = drift.dataset.is_some() || !drift.features.is_empty();
        Report {
            pipeline: s.pipeline,
            cycle: s.cycle,
            date: s.date,
            decision: s.decision,
            features: if use_drift {
                drift.features
            } else {
                s.features
            },
            dataset: if drift.dataset.is_some() {
                drift.dataset
            } else {
                s.dataset
            },
            quality: s.quality,
            performance: s.performance,
            estimate: s.estimate,
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
.feature{border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}
.drift{border-color:#d62728;background:#fff5f5} .verdict{font-weight:bold}
.drift .verdict{color:#d62728} table{border-collapse:collapse} td,th{padding:.2rem .6rem;text-align:left}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
";

/// Render a stored report body (`GET /reports/{cycle}`), read leniently.
pub fn render_stored(body: &Value) -> String {
    if let Some(at) = body
        .get(crate::records::REPORT_COLLECTED)
        .and_then(Value::as_str)
    {
        return collected_page(at);
    }
    render(&Report::from_stored(body))
}

/// The page of a report whose body retention collected.
fn collected_page(at: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>retraind · report collected</title><style>
{STYLE}</style></head><body><h1>Report collected</h1><p>This check's report was collected by retention on <b>{}</b> ([daemon.retention] keep_for); its figures stay in the pipeline's charts and history.</p></body></html>"#,
        escape(at)
    )
}

/// Render a report as one self-contained HTML page.
pub fn render(r: &Report) -> String {
    let title = match (&r.pipeline, r.cycle) {
        (Some(p), Some(c)) => format!("retraind · {p} · cycle {c}"),
        _ if r.features.is_empty() && r.estimate.is_some() => {
            "retraind · performance estimate".to_string()
        }
        _ => "retraind · drift report".to_string(),
    };
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
{STYLE}</style></head><body><h1>{}</h1>"#,
        escape(&title),
        escape(&title)
    );
    if let Some(date) = &r.date {
        let _ = write!(html, "<p>Window <b>{}</b>.</p>", escape(date));
    }
    if let Some(d) = &r.decision {
        let _ = write!(html, "<h2>Decision: {}</h2><ul>", escape(&name(&d.verdict)));
        for reason in &d.reasons {
            let _ = write!(html, "<li>{}</li>", escape(reason));
        }
        html.push_str("</ul>");
    }
    if let Some(e) = &r.estimate {
        estimate_html(&mut html, e);
    }
    if r.dataset.is_none() && r.features.is_empty() && r.estimate.is_some() {
        html.push_str("</body></html>\n");
        return html;
    }
    let dataset = r.dataset.as_ref();
    let correction = dataset.map(|d| name(&d.correction));
    let _ = write!(
        html,
        "<p>Dataset: <b>{}</b> — {} of {} features drifted ({}), correction {}.</p>",
        if dataset.is_some_and(|d| d.drifted) {
            "drift"
        } else {
            "no drift"
        },
        dataset.map(|d| d.drifted_features).unwrap_or(0),
        r.features.len(),
        number(dataset.map(|d| d.drifted_share)),
        escape(correction.as_deref().unwrap_or("-"))
    );
    if let Some(q) = r.quality.as_ref().filter(|q| !q.findings.is_empty()) {
        html.push_str("<h2>Data quality</h2><ul>");
        for f in &q.findings {
            let _ = write!(
                html,
                "<li><b>{}</b>: {}</li>",
                escape(&name(&f.severity)),
                escape(&f.message)
            );
        }
        html.push_str("</ul>");
    }
    if let Some(perf) = &r.performance {
        performance_html(&mut html, perf);
    }
    features_html(&mut html, &r.features);
    html.push_str("</body></html>\n");
    html
}

/// The label-free estimate: per chunk and metric, the estimate, its band, the realised
/// value where every row is labelled, and the thresholds.
fn estimate_html(html: &mut String, e: &EstimateReport) {
    let _ = write!(
        html,
        "<h2>Estimated performance ({}, without labels)</h2><ul>",
        escape(&e.method.to_uppercase())
    );
    for c in &e.calibration {
        let how = c.describe();
        let _ = write!(
            html,
            "<li>calibration of <b>{}</b>: {}</li>",
            escape(&c.class),
            escape(&how)
        );
    }
    let _ = write!(
        html,
        "</ul><p>Fitted on {} reference rows; chunks of {} rows.</p>",
        e.reference_rows, e.chunk_size
    );
    for chunk in &e.chunks {
        let _ = write!(
            html,
            "<h3>Chunk {} ({} rows)</h3><table><tr><th>metric</th><th>estimate</th><th>band (±3 SE)</th><th>realised</th><th>thresholds</th><th>verdict</th></tr>",
            escape(&chunk.key),
            chunk.rows.len()
        );
        for (m, v) in &chunk.metrics {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td>[{}, {}]</td><td>{}</td></tr>",
                escape(m),
                number(v.value),
                number(v.lower),
                number(v.upper),
                number(v.realized),
                number(v.thresholds.lower),
                number(v.thresholds.upper),
                if v.alert { "<b>alert</b>" } else { "ok" }
            );
        }
        html.push_str("</table>");
    }
}

/// The champion's performance table.
fn performance_html(html: &mut String, perf: &Assessment) {
    let status = name(&perf.status);
    let _ = write!(
        html,
        "<h2>Champion performance</h2><table><tr><th>metric</th><th>current</th><th>baseline</th><th>threshold</th><th>labels</th><th>test</th><th>p-value</th><th>verdict</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table><p>{}</p>",
        escape(perf.metric.name()),
        number(perf.current),
        number(perf.baseline),
        number(perf.threshold),
        perf.labels,
        escape(&name(&perf.test)),
        number(perf.p_value),
        if status == "degraded" {
            "<b>degraded</b>".to_string()
        } else {
            escape(&status.replace('_', " "))
        },
        escape(&perf.detail)
    );
    if let Some(e) = &perf.estimated {
        let _ = write!(
            html,
            "<table><tr><th>estimated ({})</th><th>band (±3 SE)</th><th>rows</th><th>realised</th><th>estimate − realised</th></tr><tr><td>{}</td><td>{} – {}</td><td>{}</td><td>{}</td><td>{}</td></tr></table><p>The realised value is filled in when the window's labels arrive (at least performance.min_labels of them).</p>",
            escape(&e.method),
            number(perf.current),
            number(Some(e.lower)),
            number(Some(e.upper)),
            e.rows,
            number(e.realised),
            number(perf.current.and_then(|v| e.error(v))),
        );
    }
}

/// Every feature, drifted first, with its histogram.
fn features_html(html: &mut String, features: &[FeatureDrift]) {
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
                .map(crate::stats::p_value)
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
        if let Some(eps) = f.rank_error {
            let _ = write!(
                html,
                "<tr><th>summary</th><td colspan=\"3\">quantile sketches: KS threshold widened by their rank error {eps:.1e}</td></tr>"
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;
    use crate::drift::DriftConfig;

    /// Tiny p-values print as a bound, not as `0.000e0`.
    #[test]
    fn p_values_below_the_float_range_print_as_a_bound() {
        use crate::stats::p_value;
        assert_eq!(p_value(0.0), "< 1e-300");
        assert_eq!(p_value(5e-310), "< 1e-300");
        assert_eq!(p_value(1.5e-300), "1.500e-300");
        assert_eq!(p_value(0.0421), "4.210e-2");
    }

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
        let html = render(&Report::from_stored(&body));
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert!(html.contains("retraind · p&lt;1&gt; · cycle 7"));
        assert!(html.contains("&lt;seg&gt;") && !html.contains("<seg>"));
        // The drifted numerical feature comes before the quiet categorical one.
        assert!(html.find("<h3>x ").unwrap() < html.find("<h3>&lt;seg&gt;").unwrap());
        assert!(html.contains("Decision: retrain"));
        assert!(!html.contains("<script"), "self-contained and inert");
    }
}
