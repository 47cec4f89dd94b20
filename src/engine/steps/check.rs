//! `checking`: the data quality gate, the drift tests and the champion's performance on
//! the window, then the decision. The report (JSON and HTML) is written and stored before
//! the cycle moves on, so `/reports/{cycle}` shows what the decision saw.

use std::path::Path;

use tracing::warn;

use super::StepResult;
use crate::artifacts;
use crate::cycle::CycleState;
use crate::data::{ReferenceSource, Table};
use crate::decision;
use crate::drift::DriftReport;
use crate::engine::{ModelLoader, Shared, StepContext, StepError};
use crate::performance::{self, Assessment, Baseline, PerformanceConfig, PerformanceSource};
use crate::quality::{self, QualityReport};
use crate::records::CheckReport;
use crate::store::{CycleUpdate, ModelVersion};

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let p = &ctx.pipeline;
    let (_, reference, current) = ctx.tables().await?;
    let champion = ctx.champion().await?;
    let baseline = p
        .performance
        .baseline
        .map(|value| Baseline { value, n: None })
        .or_else(|| {
            champion
                .as_ref()
                .and_then(|v| stored_baseline(v, p.performance.rule.metric))
        });
    let ignore = ignored_columns(ctx, &reference, &current)?;
    let (drift_cfg, min_rows, quality_cfg) = (p.drift.clone(), p.data.min_rows, p.quality.clone());
    let (perf, detector, models) = (
        p.performance.clone(),
        ctx.parts.detector.clone(),
        ctx.parts.models.clone(),
    );
    let champ = champion.clone();
    let seed = ctx.cycle.id as u64;
    let (quality, report, performance) = Shared::blocking(move || {
        let quality = quality::check(
            (&reference.fingerprint, &reference),
            (&current.fingerprint, &current),
            &ignore,
            &quality_cfg,
        );
        let report = detector.detect(&reference, &current, &drift_cfg, min_rows);
        let labelled = current.labelled().filter(|_| quality.passed);
        let performance =
            score_performance(&perf, &*models, champ.as_ref(), labelled, baseline, seed)?;
        Ok((quality, report, performance))
    })
    .await?;
    let performance = match performance {
        None => live_performance(ctx, &p.performance, baseline).await,
        some => some,
    };
    if let Some(a) = &performance {
        ctx.metrics().record_performance(&ctx.cycle.pipeline, a);
    }
    let streak = p.drift.consecutive.saturating_sub(1) as i64;
    let previous_drift = ctx
        .store()
        .previous_drift(&ctx.cycle.pipeline, ctx.cycle.id, streak)
        .await?;
    let decision = decision::decide(
        &quality,
        &report,
        performance.as_ref(),
        champion.is_some(),
        &previous_drift,
        p.drift.consecutive,
    );
    let reason = decision.reasons.join("; ");
    let doc = CheckReport {
        cycle: ctx.cycle.id,
        pipeline: ctx.cycle.pipeline.clone(),
        date: ctx.cycle.cycle_date.clone(),
        inputs: ctx.cycle.inputs.clone(),
        quality,
        drift: report,
        performance,
        decision: decision.clone(),
    };
    write_report(ctx, &doc).await?;
    record_metrics(ctx, &doc.quality, &doc.drift);
    let update = CycleUpdate {
        decision: Some(decision),
        ..CycleUpdate::default()
    };
    Ok(ctx.to(CycleState::Decided, reason, update))
}

/// The columns left out of the checks: the configured ones, the served prediction and the
/// timestamp — and, when the reference is the champion's training rows (which keep only the
/// role columns), every other column of the current window, which is not "added".
fn ignored_columns(
    ctx: &StepContext,
    reference: &Table,
    current: &Table,
) -> Result<Vec<String>, StepError> {
    let data = &ctx.pipeline.data;
    let mut ignore = data.ignore.clone();
    ignore.extend(data.prediction.iter().chain(&data.timestamp).cloned());
    if ctx.inputs()?.reference_source == ReferenceSource::Champion {
        let kept = &reference.fingerprint.schema;
        ignore.extend(
            current
                .fingerprint
                .schema
                .iter()
                .map(|(n, _)| n)
                .filter(|n| !kept.iter().any(|(m, _)| m == *n))
                .cloned(),
        );
    }
    Ok(ignore)
}

/// The check's gauges and counters.
fn record_metrics(ctx: &StepContext, quality: &QualityReport, report: &DriftReport) {
    let (m, pipeline) = (ctx.metrics(), ctx.cycle.pipeline.as_str());
    for f in quality.failures() {
        m.data_quality_failures
            .with_label_values(&[pipeline, f.check.as_str()])
            .inc();
    }
    m.last_successful_check
        .with_label_values(&[pipeline])
        .set(ctx.now().timestamp() as f64);
    m.drifted_features
        .with_label_values(&[pipeline])
        .set(report.dataset.drifted_features as i64);
    m.record_drift(pipeline, report);
}

/// The live metric from Prometheus, when that is the pipeline's source: never "healthy"
/// when Prometheus cannot answer.
pub(super) async fn live_performance(
    ctx: &StepContext,
    perf: &PerformanceConfig,
    baseline: Option<Baseline>,
) -> Option<Assessment> {
    let q = perf.prometheus.as_ref()?;
    if perf.source != PerformanceSource::Prometheus {
        return None;
    }
    Some(
        match crate::promql::query(&q.url, &q.query, q.timeout).await {
            Ok(v) => performance::assess_live(&perf.rule, v, baseline),
            Err(e) => {
                warn!(pipeline = ctx.cycle.pipeline, cycle = ctx.cycle.id, error = %e, "live metric unavailable; performance unknown");
                Assessment::unknown(perf.rule.metric, 0, format!("live metric unavailable: {e}"))
            }
        },
    )
}

/// Store the report and write it as JSON and HTML beside the pipeline's other reports.
async fn write_report(ctx: &StepContext, doc: &CheckReport) -> Result<(), StepError> {
    let body = serde_json::to_value(doc)
        .map_err(|e| StepError::Invalid(format!("report not serialisable: {e}")))?;
    ctx.store()
        .save_report(
            ctx.cycle.id,
            &ctx.cycle.pipeline,
            doc.drift.dataset.drifted,
            &body,
            ctx.now(),
        )
        .await?;
    let dir = ctx.state_dir();
    let path = artifacts::report_path(dir, &ctx.cycle.pipeline, ctx.cycle.id);
    let html_path = artifacts::report_html_path(dir, &ctx.cycle.pipeline, ctx.cycle.id);
    let text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    let html = crate::report::render(&crate::report::Report::from(doc));
    Shared::blocking(move || {
        artifacts::write_atomic(&path, &text)?;
        Ok(artifacts::write_atomic(&html_path, html.as_bytes())?)
    })
    .await
}

/// The champion's performance on labelled rows: scored by the champion itself (`model`) or
/// read from the prediction column. `None` when there is nothing to score (no labels, no
/// champion, or the source is Prometheus). Blocking.
pub(super) fn score_performance(
    perf: &PerformanceConfig,
    models: &dyn ModelLoader,
    champion: Option<&ModelVersion>,
    labelled: Option<Table>,
    baseline: Option<Baseline>,
    seed: u64,
) -> Result<Option<Assessment>, StepError> {
    Ok(match (perf.source, champion, labelled) {
        (_, _, None) | (PerformanceSource::Prometheus, _, _) => None,
        (PerformanceSource::Model, None, _) => None,
        (PerformanceSource::Model, Some(v), Some(l)) => {
            let model = models.load(Path::new(&v.path))?;
            let scored = crate::train::score(&*model, &l, perf.positive_class.as_deref())?;
            Some(performance::assess(&perf.rule, &scored, baseline, seed))
        }
        (PerformanceSource::PredictionColumn, _, Some(l)) => {
            let predicted = l.prediction.clone().unwrap_or_default();
            let rows: Vec<usize> = (0..l.rows)
                .filter(|&i| predicted.get(i).is_some_and(|p| !p.is_empty()))
                .collect();
            let l = l.take(&rows);
            let labels = l.target.clone().unwrap_or_default();
            let predicted = l.prediction.clone().unwrap_or_default();
            let positive =
                performance::positive_class(perf.positive_class.as_deref(), &labels, &predicted);
            let scored = performance::Scored {
                labels,
                predicted,
                positive_scores: None,
                positive,
            };
            Some(performance::assess(&perf.rule, &scored, baseline, seed))
        }
    })
}

/// A version's stored evaluation of `metric` (its holdout value, with the count behind it).
pub(super) fn stored_baseline(v: &ModelVersion, metric: performance::Metric) -> Option<Baseline> {
    Some(Baseline {
        value: v.metrics.holdout(metric)?,
        n: v.metrics.holdout_count(metric),
    })
}

#[cfg(test)]
mod tests {
    use crate::cycle::CycleState;
    use crate::decision::Verdict;
    use crate::engine::testkit::Kit;

    /// A quiet first window: no drift, no champion to judge, so the first model is trained;
    /// the report is stored and written as JSON and HTML.
    #[tokio::test]
    async fn a_first_check_retrains_and_stores_its_report() {
        let kit = Kit::new().await;
        kit.write_today(Kit::NORMAL, 400);
        let ctx = kit.run_until(CycleState::Checking).await;
        let (to, _, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(to, CycleState::Decided);
        let decision = update.decision.unwrap();
        assert_eq!(decision.verdict, Verdict::Retrain, "{:?}", decision.reasons);
        let report = kit.store().report(ctx.cycle.id).await.unwrap().unwrap();
        assert_eq!(report["drift"]["dataset"]["drifted"], false);
        assert!(kit.report_html(ctx.cycle.id).contains("<svg"));
    }
}
