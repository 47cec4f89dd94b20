//! `GET /`: every pipeline on one screen — champion and previous, the last check and its
//! outcome, the next run, and each hold (frozen, paused, awaiting approval) with who, since
//! when and why.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

use super::layout::{self, Tone, badge, time};
use super::{Console, PageError, urlencoding};
use crate::cycle::Outcome;
use crate::status::{self, CycleSummary, HoldSummary, PipelineStatus, VersionSummary};

/// `GET /`.
pub(crate) async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let viewer = match c.reader(&headers, "/").await {
        Ok(v) => v,
        Err(redirect) => return Ok(redirect),
    };
    let config = c.engine.config().await;
    let pipelines = status::pipelines(c.engine.store(), &config).await?;
    let body = html! {
        h1 { "Pipelines" }
        @if pipelines.is_empty() {
            p.empty { "No pipeline is configured." }
        }
        table {
            caption.skip { "Every pipeline's champion, last check, next run and holds" }
            thead { tr {
                th scope="col" { "Pipeline" }
                th scope="col" { "Champion" }
                th scope="col" { "Previous" }
                th scope="col" { "Last check" }
                th scope="col" { "Last cycle" }
                th scope="col" { "Next run" }
                th scope="col" { "Holds" }
            } }
            tbody {
                @for p in &pipelines { (row(p)) }
            }
        }
    };
    Ok(Html(layout::page("Pipelines", Some(&viewer), body).into_string()).into_response())
}

fn row(p: &PipelineStatus) -> Markup {
    html! {
        tr {
            th scope="row" { a href={ "/pipelines/" (urlencoding(&p.name)) } { (p.name) } }
            td { (version(&p.name, p.champion.as_ref())) }
            td { (version(&p.name, p.previous.as_ref())) }
            td {
                @match &p.last_check {
                    Some(c) => {
                        a href={ "/cycles/" (c.cycle) } { (time(c.at)) } " "
                        @if c.dataset_drift { (badge(Tone::Bad, "drift")) } @else { (badge(Tone::Good, "no drift")) }
                        @if let Some(share) = c.drift_share { " " span.muted { (format!("{:.0}", share * 100.0)) "% of features" } }
                    }
                    None => { span.muted { "none yet" } }
                }
            }
            td {
                @if let Some(a) = &p.active_cycle { (cycle(a)) br; }
                @if let Some(l) = &p.last_cycle { (cycle(l)) }
                @if p.active_cycle.is_none() && p.last_cycle.is_none() { span.muted { "none yet" } }
            }
            td { (p.next_scheduled_at.map(time).unwrap_or_else(|| "–".into())) }
            td {
                @if p.holds.is_empty() { span.muted { "none" } }
                @for h in &p.holds { (hold(h)) }
            }
        }
    }
}

/// A version cell: `v7` linked, with its gate metric.
pub(crate) fn version(pipeline: &str, v: Option<&VersionSummary>) -> Markup {
    html! {
        @match v {
            Some(v) => {
                a href={ "/pipelines/" (urlencoding(pipeline)) "/versions/" (v.version) } { "v" (v.version) }
                " " span.muted { (v.metric.name()) " " (layout::number(v.holdout)) }
            }
            None => { span.muted { "none" } }
        }
    }
}

/// A cycle's outcome in words with a shape.
pub(crate) fn outcome(state: &str, o: Option<Outcome>) -> Markup {
    match o {
        Some(Outcome::Deployed) => badge(Tone::Good, "deployed"),
        Some(Outcome::NoRetrain) => badge(Tone::Good, "no retrain"),
        Some(Outcome::Failed) => badge(Tone::Bad, "failed"),
        Some(Outcome::QualityFailed) => badge(Tone::Bad, "quality failed"),
        Some(Outcome::RolledBack) => badge(Tone::Bad, "rolled back"),
        Some(o) => badge(Tone::Warn, o.as_str()),
        None => badge(Tone::Neutral, state),
    }
}

fn cycle(c: &CycleSummary) -> Markup {
    html! {
        a href={ "/cycles/" (c.id) } { "#" (c.id) } " " (c.date) " "
        (outcome(c.state.as_str(), c.outcome))
        @if let Some(r) = &c.reason { div.muted { (r) } }
    }
}

/// A hold: what, by whom, since when, why.
pub(crate) fn hold(h: &HoldSummary) -> Markup {
    html! {
        div.hold {
            strong { (h.kind.as_str()) }
            @if let Some(id) = h.cycle { " (" a href={ "/cycles/" (id) } { "cycle " (id) } ")" }
            " by " (h.by) " since " (time(h.since))
            @if !h.reason.is_empty() { ": " (h.reason) }
        }
    }
}
