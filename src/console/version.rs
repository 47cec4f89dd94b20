//! `GET /pipelines/{p}/versions/{v}`: one model version — its metrics, its gate verdict, its
//! model card as written beside the model, and its lineage back through every ancestor.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

use super::layout::{self, Tone, badge, number, time};
use super::{Console, PageError, urlencoding};
use crate::store::ModelVersion;
use crate::train::card::ModelCard;

/// `GET /pipelines/{p}/versions/{v}`.
pub(crate) async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((name, number_)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let here = format!("/pipelines/{}/versions/{number_}", urlencoding(&name));
    let viewer = match c.reader(&headers, &here).await {
        Ok(v) => v,
        Err(redirect) => return Ok(redirect),
    };
    let store = c.engine.store();
    let versions = store.versions(&name).await?;
    let Some(v) = versions.iter().find(|v| v.version == number_) else {
        return Err(PageError::not_found(format!(
            "pipeline `{name}` has no version {number_}"
        )));
    };
    let gate = store.cycle(v.cycle_id).await?.and_then(|c| c.gate);
    let dir = std::path::PathBuf::from(&v.path);
    let card = tokio::task::spawn_blocking(move || ModelCard::load(&dir))
        .await
        .ok()
        .flatten();
    let title = format!("{name} v{number_}");
    let body = html! {
        h1 { a href={ "/pipelines/" (urlencoding(&name)) } { (name) } " v" (v.version) }
        dl.facts {
            dt { "Trained by" } dd { a href={ "/cycles/" (v.cycle_id) } { "cycle " (v.cycle_id) } }
            dt { "Registered" } dd { (time(v.created_at)) }
            dt { "Stored at" } dd { code { (v.path) } }
            dt { "Backend" } dd { (v.lineage.backend) }
            @if let Some(g) = &gate {
                dt { "Gate" } dd {
                    @if g.result.blessed { (badge(Tone::Good, "blessed")) } @else { (badge(Tone::Bad, "not blessed")) }
                    " " (g.result.metric.name()) " " (format!("{:.4}", g.result.challenger)) " vs champion " (number(g.result.champion))
                }
            }
        }
        h2 { "Metrics" }
        (metrics(v))
        h2 { "Lineage" }
        (lineage(&name, &versions, v))
        h2 { "Model card" }
        @match &card {
            Some(card) => {
                p { "Format " code { (card.format) } ", task " (format!("{:?}", card.task).to_lowercase()) "." }
                pre { (serde_json::to_string_pretty(card).unwrap_or_default()) }
            }
            None => { p.empty { "No readable card.json beside the model (moved or removed)." } }
        }
    };
    Ok(Html(layout::page(&title, Some(&viewer), body).into_string()).into_response())
}

fn metrics(v: &ModelVersion) -> Markup {
    let m = &v.metrics;
    html! {
        table {
            thead { tr { th scope="col" { "Metric" } th scope="col" class="num" { "Value" } } }
            tbody {
                tr { td { "validation loss" } td.num { (number(Some(m.valid_loss))) } }
                tr { td { "epochs run (best)" } td.num { (m.epochs_run) " (" (m.best_epoch) ")" } }
                tr { td { "training rows" } td.num { (m.train_rows) } }
                tr { td { "training time (s)" } td.num { (format!("{:.1}", m.duration_seconds)) } }
                tr { td { "model size (MB)" } td.num { (format!("{:.2}", m.model_size_mb)) } }
                @for (key, value) in &m.scores {
                    tr { td { (key.to_string()) } td.num { (score(*value)) } }
                }
            }
        }
    }
}

/// A score: counts (`holdout_accuracy_n`) as whole numbers, the rest to four places.
fn score(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() >= 1.0 => format!("{v:.0}"),
        other => number(other),
    }
}

/// The version and its ancestors, newest first, with what each was trained on.
fn lineage(name: &str, versions: &[ModelVersion], v: &ModelVersion) -> Markup {
    let mut chain = vec![v];
    while let Some(parent) = chain.last().and_then(|c| c.lineage.parent_version) {
        match versions.iter().find(|x| x.version == parent) {
            Some(p) if !chain.iter().any(|c| c.version == parent) => chain.push(p),
            _ => break,
        }
    }
    html! {
        ol.story {
            @for x in &chain {
                li {
                    a href={ "/pipelines/" (urlencoding(name)) "/versions/" (x.version) } { "v" (x.version) }
                    " trained " (time(x.created_at)) " by cycle " a href={ "/cycles/" (x.cycle_id) } { (x.cycle_id) }
                    " on " code { (x.lineage.training_data.path) } " (" (x.lineage.training_data.rows) " rows, " (x.lineage.training_data.source) ", blake3 "
                    code { (&x.lineage.training_data.blake3[..16.min(x.lineage.training_data.blake3.len())]) } "…)"
                    @if !x.lineage.config_hash.is_empty() { ", config " code { (&x.lineage.config_hash[..12.min(x.lineage.config_hash.len())]) } }
                }
            }
        }
    }
}
