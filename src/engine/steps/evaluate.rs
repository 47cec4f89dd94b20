//! `evaluating`: the gate. Challenger and champion are scored on the same holdout (the
//! labelled current rows the candidate did not train on); the gate judges the gate metric,
//! its margins, slices, size and latency. Then the monotonic-quality guard on the golden set
//! and the deploy guards: a candidate that could not be deployed is not put in front of a
//! human. The holdout scores become the version's baselines, and a classifier's answers on
//! the holdout are kept beside it for label-free estimates ([`HoldoutScores`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::{StepResult, golden};
use crate::cycle::{CycleState, Outcome};
use crate::engine::estimation::HoldoutScores;
use crate::engine::{Shared, StepContext, StepError, history, mirror, notices};
use crate::gate::{self, Check, GateConfig, GateInput, GateResult, MetricRow, SliceScore};
use crate::guards;
use crate::performance::{Metric, Scored};
use crate::records::{GateDocument, ScoreKey};
use crate::splits;
use crate::store::{CycleUpdate, ModelVersion};
use crate::train::Predictions;

/// Both models on the holdout.
struct Scores {
    challenger: BTreeMap<String, f64>,
    champion: Option<BTreeMap<String, f64>>,
    rows: usize,
    slices: Vec<SliceScore>,
    /// The challenger's scoring time per 1000 rows.
    latency: Option<f64>,
}

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let p = &ctx.pipeline;
    let candidate = ctx.candidate().await?;
    if let Some(m) = &p.mlflow {
        mirror::version(ctx, m, &candidate).await;
    }
    let champion = ctx.champion().await?;
    let scores = score(ctx, &candidate, champion.as_ref()).await?;
    let metric = p.gate.metric;
    // A metric the holdout cannot give (one class only for ROC AUC) is NaN: the gate fails
    // it, or, for the champion, compares with nothing.
    let value = |m: &BTreeMap<String, f64>| m.get(metric.name()).copied().unwrap_or(f64::NAN);
    let input = GateInput {
        metric,
        r2: scores.challenger.get(Metric::R2.name()).copied(),
        challenger: if scores.rows == 0 {
            0.0
        } else {
            value(&scores.challenger)
        },
        champion: scores
            .champion
            .as_ref()
            .map(value)
            .filter(|v| v.is_finite()),
        holdout_rows: scores.rows,
        slices: scores.slices.clone(),
        model_size_mb: Some(candidate.metrics.model_size_mb),
        latency_ms_per_1k: scores.latency,
    };
    let mut result: GateResult = gate::evaluate(&input, &p.gate);
    store_baselines(ctx, &candidate, &scores).await?;
    if let Some(set) = &p.guards.golden_set {
        result.add(golden::check(ctx, set, &candidate).await?);
    }
    if result.blessed {
        let h = history::read(&ctx.shared, &p.name, &p.guards).await?;
        if let Err(b) = guards::deploy_allowed(&h, ctx.now(), &p.guards) {
            notices::blocked(&ctx.shared, &p.name, Some(ctx.cycle.id), &b).await?;
            result.add(Check {
                name: b.guard.as_str().into(),
                passed: false,
                detail: b.to_string(),
            });
        }
    }
    let reason = format!("v{} {}", candidate.version, result.summary());
    let blessed = result.blessed;
    let update = CycleUpdate {
        gate: Some(GateDocument {
            metrics: metric_rows(&scores),
            result,
        }),
        ..CycleUpdate::default()
    };
    Ok(if blessed {
        ctx.to(CycleState::AwaitingApproval, reason, update)
    } else {
        ctx.to(
            CycleState::Rejected,
            reason,
            CycleUpdate {
                outcome: Some(Outcome::Rejected),
                ..update
            },
        )
    })
}

/// Score the challenger (and the champion, when there is one) on the cycle's holdout.
async fn score(
    ctx: &StepContext,
    candidate: &ModelVersion,
    champion: Option<&ModelVersion>,
) -> Result<Scores, StepError> {
    let (_, _, current) = ctx.tables().await?;
    let (share, cycle, task) = (
        ctx.pipeline.gate.holdout_share,
        ctx.cycle.id,
        ctx.pipeline.task,
    );
    let cand_path = candidate.path.clone();
    let champ_path = champion.map(|v| v.path.clone());
    let positive = ctx.pipeline.performance.positive_class.clone();
    let gate_cfg = ctx.pipeline.gate.clone();
    let models = ctx.parts.models.clone();
    Shared::blocking(move || {
        let Some(labelled) = current.labelled() else {
            return Ok(Scores {
                challenger: BTreeMap::new(),
                champion: None,
                rows: 0,
                slices: Vec::new(),
                latency: None,
            });
        };
        let (holdout_idx, _) = splits::holdout_split(
            labelled.target.as_deref(),
            labelled.rows,
            share,
            cycle,
            task,
        );
        let holdout = labelled.take(&holdout_idx);
        let labels = holdout.target.clone().unwrap_or_default();
        let answer = |path: &str| -> Result<(Predictions, f64), StepError> {
            let m = models.load(Path::new(path))?;
            let started = std::time::Instant::now();
            let answers = m.predict_scored(&holdout)?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            Ok((answers, ms * 1000.0 / holdout.rows.max(1) as f64))
        };
        let score = |path: &str| -> Result<(Scored, f64), StepError> {
            let (answers, latency) = answer(path)?;
            let scored = crate::train::scored(&answers, labels.clone(), positive.as_deref());
            Ok((scored, latency))
        };
        let (answers, latency) = answer(&cand_path)?;
        // What a label-free estimate of this version will be calibrated on.
        if let Some(kept) = HoldoutScores::of(&answers, &labels) {
            kept.save(Path::new(&cand_path))?;
        }
        let challenger = crate::train::scored(&answers, labels.clone(), positive.as_deref());
        let champ = champ_path
            .as_deref()
            .map(score)
            .transpose()?
            .map(|(s, _)| s);
        let slices = match &champ {
            Some(ch) => slices(&gate_cfg, &holdout, &challenger, ch),
            None => Vec::new(),
        };
        Ok(Scores {
            challenger: task.metrics(&challenger),
            champion: champ.as_ref().map(|s| task.metrics(s)),
            rows: holdout.rows,
            slices,
            latency: Some(latency),
        })
    })
    .await
}

/// The gate metric of both models per value of every slice column.
fn slices(
    cfg: &GateConfig,
    holdout: &crate::data::Table,
    challenger: &Scored,
    champion: &Scored,
) -> Vec<SliceScore> {
    let columns: Vec<(String, Vec<String>)> = cfg
        .slices
        .iter()
        .filter_map(|name| {
            holdout
                .categorical(name)
                .map(|v| (name.clone(), v.to_vec()))
        })
        .collect();
    gate::slice_scores(
        cfg.metric,
        &columns,
        challenger,
        champion,
        cfg.min_slice_rows,
    )
}

/// The challenger's holdout scores become its baselines (and its `candidate` gauges).
async fn store_baselines(
    ctx: &StepContext,
    candidate: &ModelVersion,
    scores: &Scores,
) -> Result<(), StepError> {
    let store = ctx.store();
    if let Some(ms) = scores.latency {
        store
            .set_version_score(candidate.id, &ScoreKey::Latency, ms)
            .await?;
    }
    for (name, value) in &scores.challenger {
        let key = holdout_key(name);
        store.set_version_score(candidate.id, &key, *value).await?;
        if let ScoreKey::Holdout(_) = key {
            ctx.metrics()
                .model_metric
                .with_label_values(&[
                    ctx.cycle.pipeline.as_str(),
                    "candidate",
                    name.as_str(),
                    "realised",
                ])
                .set(*value);
        }
    }
    Ok(())
}

/// `holdout_<metric>` (or `holdout_<metric>_n`) for a key of [`Task::metrics`].
fn holdout_key(name: &str) -> ScoreKey {
    format!("holdout_{name}")
        .parse()
        .unwrap_or_else(|_| ScoreKey::Other(format!("holdout_{name}")))
}

/// Champion vs challenger for every metric of the task (counts left out).
fn metric_rows(scores: &Scores) -> Vec<MetricRow> {
    scores
        .challenger
        .iter()
        .filter(|(k, _)| !k.ends_with("_n"))
        .map(|(k, v)| MetricRow {
            metric: k.clone(),
            champion: scores.champion.as_ref().and_then(|m| m.get(k).copied()),
            challenger: *v,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::cycle::CycleState;
    use crate::engine::testkit::Kit;
    use crate::performance::Metric;

    /// A first candidate is judged on the holdout alone: blessed past the floor, its holdout
    /// accuracy stored as its baseline, and the gate document lists every metric.
    #[tokio::test]
    async fn a_first_candidate_is_blessed_and_its_baselines_stored() {
        let kit = Kit::new().await;
        kit.write_today(Kit::NORMAL, 1000);
        let ctx = kit.run_until(CycleState::Evaluating).await;
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(to, CycleState::AwaitingApproval, "{reason}");
        let gate = update.gate.unwrap();
        assert!(gate.result.blessed);
        assert_eq!(gate.result.holdout_rows, 300);
        assert!(gate.metrics.iter().any(|m| m.metric == "f1_weighted"));
        let v = kit
            .store()
            .version(ctx.cycle.candidate_version.unwrap())
            .await
            .unwrap()
            .unwrap();
        let accuracy = v.metrics.holdout(Metric::Accuracy).unwrap();
        assert_eq!(accuracy, gate.result.challenger);
        assert_eq!(v.metrics.holdout_count(Metric::Accuracy), Some(300));
    }
}
