//! `GET /cycles/{id}`: a cycle's whole story in order — why it started, the data it read,
//! the drift table (linking to the full report), the decision and its reasons, the training
//! curve, the gate's champion-vs-challenger table with every check, approvals (and the
//! buttons, while it waits), what was deployed, watched, rolled back or frozen, and every
//! transition with its time.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

use super::layout::{self, Tone, badge, csrf_field, number, time};
use super::overview::outcome;
use super::svg::{Chart, Series, Style};
use super::{Console, PageError, Viewer, urlencoding};
use crate::cycle::CycleState;
use crate::data::Fingerprint;
use crate::records::CheckReport;
use crate::status::CycleDetail;
use crate::train::EpochReport;

/// `GET /cycles/{id}`.
pub(crate) async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let viewer = match c.reader(&headers, &format!("/cycles/{id}")).await {
        Ok(v) => v,
        Err(redirect) => return Ok(redirect),
    };
    let store = c.engine.store();
    let Some(d) = crate::status::cycle(store, id).await? else {
        return Err(PageError::not_found(format!("no cycle {id}")));
    };
    let history = match d.cycle.candidate_version {
        Some(_) => training_history(store, id).await?,
        None => Vec::new(),
    };
    let report: Option<CheckReport> = d
        .report
        .clone()
        .and_then(|r| serde_json::from_value(r).ok());
    let title = format!("Cycle {id}");
    let body = story(&d, report.as_ref(), &history, &viewer);
    Ok(Html(layout::page(&title, Some(&viewer), body).into_string()).into_response())
}

/// The per-epoch history in the model card of the cycle's candidate (empty when the card
/// is gone or has none).
async fn training_history(
    store: &crate::store::Store,
    cycle: i64,
) -> Result<Vec<EpochReport>, PageError> {
    let Some(v) = store.version_for_cycle(cycle).await? else {
        return Ok(Vec::new());
    };
    let dir = std::path::PathBuf::from(v.path);
    let card = tokio::task::spawn_blocking(move || crate::train::card::ModelCard::load(&dir))
        .await
        .ok()
        .flatten();
    Ok(card
        .and_then(|c| c.training)
        .map(|t| t.history)
        .unwrap_or_default())
}

fn story(
    d: &CycleDetail,
    report: Option<&CheckReport>,
    history: &[EpochReport],
    viewer: &Viewer,
) -> Markup {
    let c = &d.cycle;
    let started = d
        .transitions
        .first()
        .map(|t| t.reason.as_str())
        .unwrap_or("");
    html! {
        h1 { "Cycle " (c.id) " · " a href={ "/pipelines/" (urlencoding(&c.pipeline)) } { (c.pipeline) } " · " (c.cycle_date) }
        dl.facts {
            dt { "Outcome" } dd { (outcome(c.state.as_str(), c.outcome)) }
            dt { "Now" } dd { (c.reason.as_deref().unwrap_or("")) }
            dt { "Started" } dd { (time(c.created_at)) " — " @if started.is_empty() { (c.trigger.as_str()) " trigger" } @else { (started) } }
            @if let Some(f) = c.finished_at { dt { "Finished" } dd { (time(f)) } }
            @if c.resumes > 0 { dt { "Resumed" } dd { (c.resumes) " time(s) after a restart" } }
        }
        (approval_forms(d, viewer))
        @if let Some(i) = &c.inputs {
            h2 { "Data read" }
            p { "Reference: " (i.reference_from) }
            table {
                thead { tr { th scope="col" { "Side" } th scope="col" { "Location" } th scope="col" class="num" { "Rows" } th scope="col" class="num" { "Bytes" } th scope="col" { "BLAKE3" } } }
                tbody {
                    (fingerprint("reference", &i.reference))
                    (fingerprint("current", &i.current))
                }
            }
            p { (i.labelled_rows) " labelled rows in the current window." }
        }
        @if let Some(r) = report { (check(r, c.id)) }
        @if let Some(decision) = &c.decision {
            h2 { "Decision" }
            p { (badge(Tone::Neutral, decision.verdict.as_str())) }
            ul { @for reason in &decision.reasons { li { (reason) } } }
        }
        (training(c.candidate_version, history))
        (gate(d))
        @if !d.approvals.is_empty() {
            h2 { "Approvals" }
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Decision" } th scope="col" { "Channel" } th scope="col" { "Reason" } } }
                tbody { @for a in &d.approvals { tr {
                    td { (time(a.at)) } td { (a.approver) } td { (a.decision.as_str()) } td { (a.channel) } td { (a.reason) }
                } } }
            }
        }
        @if !d.events.is_empty() {
            h2 { "Deploys, watch, rollbacks and other events" }
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "What happened" } } }
                tbody { @for e in &d.events { tr { td { (time(e.at)) } td { (e.kind.as_str()) } td { (e.message) } } } }
            }
        }
        h2 { "Transitions" }
        ol.story {
            @for t in &d.transitions {
                li { (time(t.at)) ": " (t.from.map(|f| f.as_str()).unwrap_or("–")) " → " strong { (t.to.as_str()) } " — " (t.reason) }
            }
        }
    }
}

fn fingerprint(side: &str, f: &Fingerprint) -> Markup {
    html! { tr {
        th scope="row" { (side) } td { code { (f.path) } } td.num { (f.rows) } td.num { (f.bytes) }
        td { code title=(f.blake3) { (&f.blake3[..16.min(f.blake3.len())]) "…" } }
    } }
}

fn check(r: &CheckReport, cycle: i64) -> Markup {
    let mut features: Vec<_> = r.drift.features.iter().collect();
    features.sort_by(|a, b| {
        b.drifted.cmp(&a.drifted).then(
            a.p_adjusted
                .unwrap_or(1.0)
                .total_cmp(&b.p_adjusted.unwrap_or(1.0)),
        )
    });
    let ds = &r.drift.dataset;
    html! {
        h2 { "Check" }
        p {
            "Data quality: "
            @if r.quality.passed { (badge(Tone::Good, "passed")) } @else { (badge(Tone::Bad, "failed")) }
            " · Dataset: "
            @if ds.drifted { (badge(Tone::Bad, "drift")) } @else { (badge(Tone::Good, "no drift")) }
            " (" (ds.drifted_features) " of " (r.drift.features.len()) " features drifted) · "
            a href={ "/reports/" (cycle) } { "Full report with histograms" }
        }
        @if !r.quality.findings.is_empty() {
            ul { @for f in &r.quality.findings { li { (f.message) } } }
        }
        table {
            caption.skip { "Drift per feature, drifted first" }
            thead { tr {
                th scope="col" { "Feature" } th scope="col" { "Method" } th scope="col" class="num" { "Statistic" }
                th scope="col" class="num" { "p (adjusted)" } th scope="col" class="num" { "Threshold" } th scope="col" { "Verdict" }
            } }
            tbody { @for f in features { tr {
                td { (f.name) }
                td { (f.method.as_str()) @if let Some(e) = f.rank_error { " (sketched, ±" (format!("{e:.1e}")) ")" } }
                td.num { (format!("{:.4}", f.statistic)) }
                td.num { (f.p_adjusted.map(crate::stats::p_value).unwrap_or_else(|| "–".into())) }
                td.num { (format!("{:.4}", f.threshold)) }
                td { @if f.drifted { (badge(Tone::Bad, "drift")) } @else { (badge(Tone::Good, "ok")) } }
            } } }
        }
        @if let Some(p) = &r.performance {
            p { "Champion " (p.metric.name()) ": " (number(p.current)) " now, baseline " (number(p.baseline))
                @if p.estimated.is_some() { " (estimated without labels)" }
                " — " (p.detail) }
        }
    }
}

fn training(candidate: Option<i64>, history: &[EpochReport]) -> Markup {
    let Some(v) = candidate else {
        return html! {};
    };
    let x_ends = (
        "epoch 1".to_string(),
        format!("epoch {}", history.last().map(|e| e.epoch).unwrap_or(0)),
    );
    let series = |name: &str, style, f: fn(&EpochReport) -> f64| Series {
        name: name.into(),
        style,
        points: history.iter().map(|e| (e.epoch as f64, f(e))).collect(),
    };
    let chart = (!history.is_empty()).then(|| {
        Chart {
            title: "Loss per epoch".into(),
            x_ends,
            series: vec![
                series("training loss", Style::Solid, |e| e.train_loss),
                series("validation loss", Style::Dashed, |e| e.valid_loss),
            ],
            markers: vec![],
            y_range: None,
        }
        .render()
    });
    html! {
        h2 { "Training" }
        p { "Candidate v" (v) ", " (history.len()) " epochs recorded in its model card." }
        @if let Some(chart) = &chart { (chart) }
    }
}

fn gate(d: &CycleDetail) -> Markup {
    let Some(g) = &d.cycle.gate else {
        return html! {};
    };
    let r = &g.result;
    html! {
        h2 { "Evaluation gate" }
        p {
            @if r.blessed { (badge(Tone::Good, "blessed")) } @else { (badge(Tone::Bad, "not blessed")) }
            " " (r.metric.name()) ": challenger " (format!("{:.4}", r.challenger)) " vs champion " (number(r.champion))
            " on " (r.holdout_rows) " holdout rows"
        }
        table {
            thead { tr { th scope="col" { "Check" } th scope="col" { "Result" } th scope="col" { "Detail" } } }
            tbody { @for check in &r.checks { tr {
                td { (check.name) }
                td { @if check.passed { (badge(Tone::Good, "pass")) } @else { (badge(Tone::Bad, "fail")) } }
                td { (check.detail) }
            } } }
        }
        @if !g.metrics.is_empty() {
            table {
                caption.skip { "Champion and challenger on every metric" }
                thead { tr { th scope="col" { "Metric" } th scope="col" class="num" { "Champion" } th scope="col" class="num" { "Challenger" } } }
                tbody { @for m in &g.metrics { tr {
                    td { (m.metric) } td.num { (number(m.champion)) } td.num { (format!("{:.4}", m.challenger)) }
                } } }
            }
        }
    }
}

/// Approve and reject buttons while the cycle waits, for a logged-in person.
fn approval_forms(d: &CycleDetail, viewer: &Viewer) -> Markup {
    let c = &d.cycle;
    if c.state != CycleState::AwaitingApproval {
        return html! {};
    }
    html! {
        div.hold role="status" {
            strong { "Awaiting approval" }
            @if let Some(v) = c.candidate_version { " of candidate v" (v) }
            @if let Some(deadline) = c.deadline_at { ", until " (time(deadline)) }
        }
        @if viewer.user().is_some() {
            form.action method="post" action={ "/cycles/" (c.id) "/approve" } {
                (csrf_field(viewer))
                label for="approve-reason" { "Reason for approving (optional)" }
                input id="approve-reason" type="text" name="reason" maxlength="1000";
                button.primary type="submit" { "Approve" }
            }
            form.action method="post" action={ "/cycles/" (c.id) "/reject" } {
                (csrf_field(viewer))
                label for="reject-reason" { "Reason for rejecting" }
                input id="reject-reason" type="text" name="reason" maxlength="1000";
                button.danger type="submit" { "Reject" }
            }
        } @else {
            p { a href={ "/login?next=/cycles/" (c.id) } { "Log in" } " to approve or reject." }
        }
    }
}
