//! The champion's metric on a window whose labels have not arrived, estimated the way
//! `retraind estimate` does it (CBPE, [`crate::estimate`]): the gate keeps each new
//! version's scores on its holdout beside the model ([`HoldoutScores`], rows it never
//! learned from, with their labels), the champion scores the whole current window through
//! its predictor (burn, command and Kubeflow models alike), CBPE is calibrated on the
//! holdout scores and estimates the window's metric with its band, and the degradation rule
//! reads the band ([`crate::performance::assess_estimate`]).
//!
//! This module does the I/O and the translation from a model's predictions to typed CBPE
//! input; it must not decide anything itself (the rule is policy's) nor move a cycle.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::steps::watch::Reader;
use super::{ModelLoader, Shared, StepContext, StepError};
use crate::artifacts;
use crate::data::Table;
use crate::estimate::{self, Cbpe, EstimateReport};
use crate::performance::{self, Assessment, Band, Baseline, PerformanceConfig};
use crate::records::{CheckReport, EventKind};
use crate::store::ModelVersion;
use crate::train::Predictions;

/// A version's answers on its gate holdout, kept beside the model: what CBPE calibrates on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutScores {
    /// The model's classes, in its own order.
    pub classes: Vec<String>,
    /// Row-major probabilities, `rows × classes`.
    pub probabilities: Vec<f64>,
    pub predicted: Vec<String>,
    pub labels: Vec<String>,
}

impl HoldoutScores {
    /// What a classifier said on the holdout; `None` for a regressor (no classes).
    pub fn of(p: &Predictions, labels: &[String]) -> Option<HoldoutScores> {
        (!p.classes.is_empty()).then(|| HoldoutScores {
            classes: p.classes.clone(),
            probabilities: p.probabilities.clone(),
            predicted: p.labels.clone(),
            labels: labels.to_vec(),
        })
    }

    /// Write beside the model in `dir` (atomically: a re-run gate rewrites it whole).
    pub fn save(&self, dir: &Path) -> Result<(), StepError> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| StepError::Invalid(format!("holdout scores not serialisable: {e}")))?;
        Ok(artifacts::write_atomic(
            &dir.join(artifacts::HOLDOUT_SCORES),
            &bytes,
        )?)
    }

    /// The scores kept beside the model in `dir`, if it has them.
    pub fn load(dir: &Path) -> Result<Option<HoldoutScores>, StepError> {
        let path = dir.join(artifacts::HOLDOUT_SCORES);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StepError::Invalid(format!("{}: {e}", path.display())));
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StepError::Invalid(format!(
                "{}: not a holdout-scores file ({e}); delete it and the next evaluation writes it again",
                path.display()
            ))
        })
    }

    fn predictions(&self, positive: Option<&str>) -> Result<estimate::Predictions, String> {
        let labels: Vec<Option<&str>> = self.labels.iter().map(|l| Some(l.as_str())).collect();
        cbpe_input(
            &self.classes,
            &self.probabilities,
            &self.predicted,
            &labels,
            positive,
        )
    }
}

/// CBPE's input from a model's answers: binary models as (negative, positive) with the
/// positive class's probability (the configured positive class, else the greater name);
/// more classes in name order, each with its column. A label the model does not know is
/// left out as unlabelled.
fn cbpe_input(
    model_classes: &[String],
    probabilities: &[f64],
    predicted: &[String],
    labels: &[Option<&str>],
    positive: Option<&str>,
) -> Result<estimate::Predictions, String> {
    let k = model_classes.len();
    if k < 2 {
        return Err(format!(
            "the champion knows {k} class(es); an estimate needs a classifier of at least two"
        ));
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| model_classes[a].cmp(&model_classes[b]));
    if k == 2
        && let Some(p) = positive
    {
        let Some(at) = model_classes.iter().position(|c| c == p) else {
            return Err(format!(
                "performance.positive_class `{p}` is not one of the champion's classes ({})",
                model_classes.join(", ")
            ));
        };
        order = vec![1 - at, at];
    }
    let classes: Vec<String> = order.iter().map(|&i| model_classes[i].clone()).collect();
    let column =
        |i: usize| -> Vec<f64> { probabilities.iter().skip(i).step_by(k).copied().collect() };
    let scores = if k == 2 {
        vec![column(order[1])]
    } else {
        order.iter().map(|&i| column(i)).collect()
    };
    let index = |v: &str| classes.iter().position(|c| c == v);
    let mut predicted_at = Vec::with_capacity(predicted.len());
    for (row, p) in predicted.iter().enumerate() {
        predicted_at.push(index(p).ok_or_else(|| {
            format!("row {row}: the champion predicted `{p}`, which is not one of its classes")
        })?);
    }
    let actual = labels
        .iter()
        .map(|l| l.filter(|l| !l.is_empty()).and_then(index))
        .collect();
    Ok(estimate::Predictions {
        classes,
        scores,
        predicted: predicted_at,
        actual,
    })
}

/// The estimate of the champion's metric on `window` (every row, labelled or not) and the
/// report of it; `realised`: the window's labelled value when it had `min_labels` labels.
/// A champion without holdout scores, or data CBPE refuses, gives an `unknown` assessment
/// saying why; failing to load or run the model is the step's error. Blocking.
pub fn estimate_window(
    perf: &PerformanceConfig,
    models: &dyn ModelLoader,
    champion: &ModelVersion,
    window: &Table,
    baseline: Option<Baseline>,
    realised: Option<f64>,
) -> Result<(Assessment, Option<EstimateReport>), StepError> {
    let metric = perf.rule.metric;
    let unknown = |why: String| Ok((Assessment::unknown(metric, 0, why), None));
    let Some(cbpe_metric) = estimate::CbpeMetric::of(metric) else {
        return unknown(format!(
            "{} cannot be estimated without labels",
            metric.name()
        ));
    };
    let dir = Path::new(&champion.path);
    let Some(holdout) = HoldoutScores::load(dir)? else {
        return unknown(format!(
            "champion v{} has no holdout scores to calibrate an estimate on (it was evaluated before estimates existed); the next evaluated version will have them",
            champion.version
        ));
    };
    let model = models.load(dir)?;
    let answers = model.predict_scored(window)?;
    let labels: Vec<Option<&str>> = match &window.target {
        Some(t) => t.iter().map(|l| Some(l.as_str())).collect(),
        None => vec![None; window.rows],
    };
    let positive = perf.positive_class.as_deref();
    let inputs = holdout.predictions(positive).and_then(|r| {
        let c = cbpe_input(
            &answers.classes,
            &answers.probabilities,
            &answers.labels,
            &labels,
            positive,
        )?;
        Ok((r, c))
    });
    let (reference, current) = match inputs {
        Ok(pair) => pair,
        Err(why) => return unknown(format!("cannot estimate: {why}")),
    };
    let fitted = Cbpe::fit(&reference, &[cbpe_metric], window.rows.max(1))
        .and_then(|c| c.estimate(&current).map(|chunks| (c, chunks)));
    let (cbpe, chunks) = match fitted {
        Ok(x) => x,
        Err(e) => return unknown(format!("cannot estimate: {e}")),
    };
    let found = chunks
        .first()
        .and_then(|c| c.metrics.get(&cbpe_metric))
        .and_then(|e| Some((e.value?, e.lower?, e.upper?)));
    let Some((value, lower, upper)) = found else {
        return unknown(format!(
            "estimated {} is undefined on this window (the champion predicts one class only)",
            metric.name()
        ));
    };
    let band = Band {
        value,
        lower,
        upper,
    };
    let mut a = performance::assess_estimate(&perf.rule, band, window.rows, baseline, realised);
    if let Some(e) = a.estimated.as_mut() {
        e.version_id = Some(champion.id);
    }
    let report = EstimateReport::cbpe(&cbpe, holdout.labels.len(), &chunks);
    Ok((a, Some(report)))
}

/// How many earlier checks are looked at for labels that have arrived since.
const SETTLE_LOOKBACK: i64 = 14;

/// Estimates meet their labels: for each of the pipeline's last [`SETTLE_LOOKBACK`] checks
/// whose metric was estimated and has no realised value yet, its day's window is read
/// again; once it has `min_labels` labelled rows, the version that was estimated scores
/// them and the realised value is stored beside the estimate (report, event, and the
/// `retraind_estimate_error` gauge). A window that cannot be read yet is left for later.
pub async fn settle(ctx: &StepContext) -> Result<(), StepError> {
    let pipeline = ctx.cycle.pipeline.as_str();
    for cycle in ctx.store().cycles(Some(pipeline), SETTLE_LOOKBACK).await? {
        if cycle.id == ctx.cycle.id {
            continue;
        }
        let Some(body) = ctx.store().report(cycle.id).await? else {
            continue;
        };
        let Ok(mut report) = serde_json::from_value::<CheckReport>(body) else {
            continue;
        };
        let Some(perf) = report.performance.as_mut() else {
            continue;
        };
        let (Some(est), Some(inputs)) = (perf.estimated.as_mut(), report.inputs.as_ref()) else {
            continue;
        };
        let (None, Some(version_id)) = (est.realised, est.version_id) else {
            continue;
        };
        let Some(version) = ctx.store().version(version_id).await? else {
            continue;
        };
        let reader = Reader {
            data: ctx.pipeline.data.clone(),
            roles: inputs.roles.clone(),
            cache: artifacts::inputs_dir(ctx.state_dir()),
        };
        let (date, models) = (cycle.cycle_date.clone(), ctx.parts.models.clone());
        let metric = perf.metric;
        let (min, positive) = (
            ctx.pipeline.performance.rule.min_labels,
            ctx.pipeline.performance.positive_class.clone(),
        );
        let realised = Shared::blocking(move || {
            let Ok(Some(rows)) = reader.labelled(&date) else {
                return Ok(None);
            };
            if rows.rows < min {
                return Ok(None);
            }
            let model = models.load(Path::new(&version.path))?;
            let scored = crate::train::score(&*model, &rows, positive.as_deref())?;
            Ok(performance::compute(metric, &scored, None)
                .ok()
                .map(|v| v.value)
                .filter(|v| v.is_finite()))
        })
        .await?;
        let Some(realised) = realised else {
            continue;
        };
        est.realised = Some(realised);
        let estimate = perf.current.unwrap_or(f64::NAN);
        let line = format!(
            "cycle {}'s estimated {} {estimate:.4} met its labels: realised {realised:.4} (error {:+.4})",
            cycle.id,
            metric.name(),
            estimate - realised
        );
        ctx.metrics()
            .estimate_error
            .with_label_values(&[pipeline, metric.name()])
            .set(estimate - realised);
        super::steps::check::write_report(ctx, &report).await?;
        ctx.event(EventKind::EstimateSettled, &line).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_binary_model_is_read_as_negative_then_positive() {
        // The model orders its classes ("yes", "no"); the positive class is the greater
        // name unless configured.
        let probs = [0.9, 0.1, 0.2, 0.8];
        let p = cbpe_input(
            &s(&["yes", "no"]),
            &probs,
            &s(&["yes", "no"]),
            &[Some("yes"), None],
            None,
        )
        .unwrap();
        assert_eq!(p.classes, s(&["no", "yes"]));
        assert_eq!(p.scores, vec![vec![0.9, 0.2]]);
        assert_eq!(p.predicted, vec![1, 0]);
        assert_eq!(p.actual, vec![Some(1), None]);
        let q = cbpe_input(
            &s(&["yes", "no"]),
            &probs,
            &s(&["yes", "no"]),
            &[None, None],
            Some("no"),
        )
        .unwrap();
        assert_eq!(q.classes, s(&["yes", "no"]));
        assert_eq!(q.scores, vec![vec![0.1, 0.8]]);
        assert_eq!(q.predicted, vec![0, 1]);
        let bad = cbpe_input(
            &s(&["a", "b"]),
            &probs,
            &s(&["a", "b"]),
            &[None, None],
            Some("c"),
        );
        assert!(bad.unwrap_err().contains("positive_class `c`"));
    }

    #[test]
    fn the_metrics_the_config_allows_are_the_ones_cbpe_estimates() {
        for m in crate::performance::Metric::ALL {
            assert_eq!(
                m.estimable(),
                estimate::CbpeMetric::of(m).is_some(),
                "{m:?}"
            );
        }
    }

    #[test]
    fn more_classes_are_read_in_name_order() {
        let probs = [0.5, 0.3, 0.2];
        let p = cbpe_input(&s(&["c", "a", "b"]), &probs, &s(&["c"]), &[Some("b")], None).unwrap();
        assert_eq!(p.classes, s(&["a", "b", "c"]));
        assert_eq!(p.scores, vec![vec![0.3], vec![0.2], vec![0.5]]);
        assert_eq!((p.predicted[0], p.actual[0]), (2, Some(1)));
    }
}
