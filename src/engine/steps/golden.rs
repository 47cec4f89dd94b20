//! The monotonic-quality guard of the evaluation: the candidate must not score below the
//! best of the last K champions on the pipeline's fixed golden set. Scores are stored on each
//! version under the golden set's digest, so a changed golden set is scored afresh and an
//! unchanged one is never scored twice.

use std::path::Path;

use crate::artifacts;
use crate::data;
use crate::engine::{Shared, StepContext, StepError, notices};
use crate::gate::Check;
use crate::guards;
use crate::performance;
use crate::records::ScoreKey;
use crate::source;
use crate::store::{DeployKind, ModelVersion};

/// The guard's check, for the gate's list: passed, or blocked with the numbers (a golden
/// set that cannot be scored fails the check).
pub(super) async fn check(
    ctx: &StepContext,
    set: &source::Location,
    candidate: &ModelVersion,
) -> Result<Check, StepError> {
    let p = &ctx.pipeline;
    let name = "monotonic_quality".to_string();
    let (score, past) = match scores(ctx, set, candidate).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(Check {
                name,
                passed: false,
                detail: format!("golden set could not be scored: {e}"),
            });
        }
    };
    let verdict = guards::monotonic_quality(p.gate.metric, score, &past, &p.guards);
    if let Err(b) = &verdict {
        notices::blocked(&ctx.shared, &p.name, Some(ctx.cycle.id), b).await?;
    }
    Ok(Check {
        name,
        passed: verdict.is_ok(),
        detail: match verdict {
            Ok(()) => format!(
                "golden-set {} {score:.4} is not worse than the last {} champions",
                p.gate.metric.name(),
                p.guards.monotonic_last
            ),
            Err(b) => b.reason,
        },
    })
}

/// The last K deployed champions, newest first.
async fn past_champions(ctx: &StepContext) -> Result<Vec<ModelVersion>, StepError> {
    let store = ctx.store();
    let mut past: Vec<ModelVersion> = Vec::new();
    for d in store.deployments(&ctx.cycle.pipeline, 100).await? {
        if d.kind == DeployKind::Deploy
            && !past.iter().any(|v| v.id == d.version_id)
            && let Some(v) = store.version(d.version_id).await?
        {
            past.push(v);
        }
        if past.len() >= ctx.pipeline.guards.monotonic_last {
            break;
        }
    }
    Ok(past)
}

/// The gate metric on the golden set of the candidate and of the last K champions (as
/// (version number, score), newest first), computing and storing the ones not stored yet.
async fn scores(
    ctx: &StepContext,
    set: &source::Location,
    candidate: &ModelVersion,
) -> Result<(f64, Vec<(i64, f64)>), StepError> {
    let roles = ctx.inputs()?.roles.clone();
    let cache = artifacts::inputs_dir(ctx.state_dir());
    let (loc, s3) = (set.clone(), ctx.pipeline.data.s3.clone());
    let positive = ctx.pipeline.performance.positive_class.clone();
    let metric = ctx.pipeline.gate.metric;
    let models_loader = ctx.parts.models.clone();
    let mut models = vec![candidate.clone()];
    models.extend(past_champions(ctx).await?);
    let (key, scores) = Shared::blocking(move || {
        let input = source::resolve(&loc, &cache, &s3)?;
        let table = data::load(&input, &roles, true)?;
        let labelled = table
            .labelled()
            .ok_or_else(|| StepError::Invalid("the golden set has no labelled rows".into()))?;
        let digest = &labelled.fingerprint.blake3;
        let key = ScoreKey::Golden {
            metric,
            set: digest[..12.min(digest.len())].to_string(),
        };
        let mut out = Vec::new();
        for v in &models {
            // Stored scores are reused; only new ones are computed (and stored below).
            let score = match v.metrics.score(&key) {
                Some(s) => (s, false),
                None => {
                    let m = models_loader.load(Path::new(&v.path))?;
                    let scored = crate::train::score(&*m, &labelled, positive.as_deref())?;
                    let value = performance::compute(metric, &scored, None)
                        .map_err(|e| StepError::Invalid(format!("golden set: {e}")))?;
                    (value.value, true)
                }
            };
            out.push((v.id, v.version, score));
        }
        Ok((key, out))
    })
    .await?;
    let mut candidate_score = 0.0;
    let mut past = Vec::new();
    for (i, (id, version, (score, fresh))) in scores.into_iter().enumerate() {
        if fresh {
            ctx.store().set_version_score(id, &key, score).await?;
        }
        if i == 0 {
            candidate_score = score;
        } else {
            past.push((version, score));
        }
    }
    Ok((candidate_score, past))
}
