//! `GET /pipelines/{p}`: one pipeline — its holds and the actions on it, charts of drift
//! share, the champion's metric (realised and estimated) and deploys over time, the timeline
//! of cycles (50 a page) and every model version with its aliases and gate metric.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, csrf_field, number, time};
use super::overview::{hold, outcome, version};
use super::svg::{Chart, Marker, Series, Style};
use super::{Console, PageError, Viewer, urlencoding};
use crate::store::{Deployment, ModelVersion, ReportPoint};

/// Cycles shown per page of the timeline.
const PAGE: i64 = 50;
/// Checks and deploys the charts reach back over.
const HISTORY: i64 = 365;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Paging {
    /// Show cycles older than this one.
    before: Option<i64>,
}

/// `GET /pipelines/{p}`.
pub(crate) async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Response, PageError> {
    let here = format!("/pipelines/{}", urlencoding(&name));
    let viewer = match c.reader(&headers, &here).await {
        Ok(v) => v,
        Err(redirect) => return Ok(redirect),
    };
    let config = c.engine.config().await;
    let Some(p) = config.pipeline(&name) else {
        return Err(PageError::not_found(format!(
            "no pipeline `{name}` in the configuration"
        )));
    };
    let store = c.engine.store();
    let status = crate::status::pipeline(store, p).await?;
    let status = Some(&status);
    let cycles = store.cycle_page(&name, paging.before, PAGE).await?;
    let mut points = store.report_points(&name, HISTORY).await?;
    points.reverse();
    let deploys = store.deployments(&name, HISTORY).await?;
    let mut versions = store.versions(&name).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let metric = p.gate.metric;
    let body = html! {
        h1 { "Pipeline " (name) }
        @if let Some(s) = status {
            dl.facts {
                dt { "Champion" } dd { (version(&name, s.champion.as_ref())) }
                dt { "Previous" } dd { (version(&name, s.previous.as_ref())) }
                dt { "Schedule" } dd { code { (s.schedule) } " (" (s.timezone) "), next " (s.next_scheduled_at.map(time).unwrap_or_else(|| "–".into())) }
            }
            @for h in &s.holds { (hold(h)) }
        }
        (actions(&viewer, &name, status.is_some_and(|s| !s.holds.is_empty())))
        h2 { "Over time" }
        (drift_chart(&points, &deploys))
        (metric_chart(metric.name(), &points, &deploys))
        h2 id="cycles" { "Cycles" }
        (timeline(&cycles))
        @if cycles.len() as i64 == PAGE {
            @if let Some(last) = cycles.last() {
                p { a href={ (here) "?before=" (last.id) "#cycles" } { "Older cycles" } }
            }
        }
        h2 { "Model versions" }
        (versions_table(&name, &versions, status, metric))
    };
    Ok(Html(layout::page(&name, Some(&viewer), body).into_string()).into_response())
}

/// x of a time on the charts: days since the epoch.
fn day(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp() as f64 / 86_400.0
}

fn ends(points: &[ReportPoint]) -> (String, String) {
    (
        points.first().map(|p| p.date.clone()).unwrap_or_default(),
        points.last().map(|p| p.date.clone()).unwrap_or_default(),
    )
}

fn markers(deploys: &[Deployment], points: &[ReportPoint]) -> Vec<Marker> {
    let from = points
        .first()
        .map(|p| day(p.at))
        .unwrap_or(f64::NEG_INFINITY);
    deploys
        .iter()
        .filter(|d| day(d.at) >= from)
        .map(|d| Marker {
            x: day(d.at),
            label: format!(
                "{} v{} by {} at {}",
                d.kind.as_str(),
                d.version,
                d.actor,
                time(d.at)
            ),
        })
        .collect()
}

fn drift_chart(points: &[ReportPoint], deploys: &[Deployment]) -> Markup {
    Chart {
        title: "Share of features drifted per check".into(),
        x_ends: ends(points),
        series: vec![Series {
            name: "drift share".into(),
            style: Style::Solid,
            points: points
                .iter()
                .filter_map(|p| Some((day(p.at), p.drift_share?)))
                .collect(),
        }],
        markers: markers(deploys, points),
        y_range: Some((0.0, 1.0)),
    }
    .render()
}

fn metric_chart(metric: &str, points: &[ReportPoint], deploys: &[Deployment]) -> Markup {
    let realised = points.iter().filter_map(|p| {
        let v = if p.estimated { p.realised } else { p.metric };
        Some((day(p.at), v?))
    });
    let estimated = points
        .iter()
        .filter(|p| p.estimated)
        .filter_map(|p| Some((day(p.at), p.metric?)));
    let mut series = vec![Series {
        name: format!("{metric} realised"),
        style: Style::Solid,
        points: realised.collect(),
    }];
    let estimated: Vec<_> = estimated.collect();
    if !estimated.is_empty() {
        series.push(Series {
            name: format!("{metric} estimated without labels"),
            style: Style::Dashed,
            points: estimated,
        });
    }
    Chart {
        title: format!("Champion {metric} per check"),
        x_ends: ends(points),
        series,
        markers: markers(deploys, points),
        y_range: None,
    }
    .render()
}

fn timeline(cycles: &[crate::store::CycleRow]) -> Markup {
    html! {
        @if cycles.is_empty() { p.empty { "No cycle yet." } }
        @else {
            table {
                thead { tr {
                    th scope="col" { "Cycle" } th scope="col" { "Day" } th scope="col" { "Trigger" }
                    th scope="col" { "Outcome" } th scope="col" { "Why" } th scope="col" { "Started" }
                } }
                tbody {
                    @for c in cycles {
                        tr {
                            td { a href={ "/cycles/" (c.id) } { "#" (c.id) } }
                            td { (c.cycle_date) }
                            td { (c.trigger.as_str()) }
                            td { (outcome(c.state.as_str(), c.outcome)) }
                            td { (c.reason.as_deref().unwrap_or("")) }
                            td { (time(c.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn versions_table(
    name: &str,
    versions: &[ModelVersion],
    status: Option<&crate::status::PipelineStatus>,
    metric: crate::performance::Metric,
) -> Markup {
    let alias = |v: i64| -> &'static str {
        match status {
            Some(s) if s.champion.as_ref().is_some_and(|c| c.version == v) => "champion",
            Some(s) if s.previous.as_ref().is_some_and(|c| c.version == v) => "previous",
            _ => "",
        }
    };
    html! {
        @if versions.is_empty() { p.empty { "No model version yet." } }
        @else {
            table {
                thead { tr {
                    th scope="col" { "Version" } th scope="col" { "Alias" }
                    th scope="col" class="num" { "Holdout " (metric.name()) }
                    th scope="col" { "Trained by cycle" } th scope="col" { "Registered" }
                } }
                tbody {
                    @for v in versions {
                        tr {
                            td { a href={ "/pipelines/" (urlencoding(name)) "/versions/" (v.version) } { "v" (v.version) } }
                            td { (alias(v.version)) }
                            td.num { (number(v.metrics.holdout(metric))) }
                            td { a href={ "/cycles/" (v.cycle_id) } { "#" (v.cycle_id) } }
                            td { (time(v.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// Freeze, resume and rollback forms, for a logged-in person.
fn actions(viewer: &Viewer, name: &str, held: bool) -> Markup {
    let base = format!("/pipelines/{}", urlencoding(name));
    html! {
        @if viewer.user().is_some() {
            h2 { "Act on " (name) }
            @if held {
                form.action method="post" action={ (base) "/resume" } {
                    (csrf_field(viewer))
                    p { "Lift the freeze or the circuit breaker's pause; the next scheduled check runs as usual." }
                    button.primary type="submit" { "Resume " (name) }
                }
            }
            form.action method="post" action={ (base) "/freeze" } {
                (csrf_field(viewer))
                label for="freeze-reason" { "Reason for freezing" }
                input id="freeze-reason" type="text" name="reason" maxlength="1000";
                button type="submit" { "Freeze " (name) }
            }
            form.action method="post" action={ (base) "/rollback" } {
                (csrf_field(viewer))
                label for="rollback-to" { "Roll back to version (empty: the previous champion)" }
                input id="rollback-to" type="number" name="to" min="1";
                label for="rollback-reason" { "Reason for rolling back" }
                input id="rollback-reason" type="text" name="reason" maxlength="1000";
                button.danger type="submit" { "Roll back " (name) }
            }
        }
    }
}
