//! The MLflow mirror: a trained version becomes an MLflow run (params, per-epoch metrics,
//! the model card) and a registered model version; deploys and rollbacks move MLflow's
//! `champion` and `previous` aliases after ours. A mirror, not a dependency: a failure is
//! logged and kept as an event of the cycle, and the next evaluation tries again.

use std::collections::BTreeSet;
use std::path::Path;

use tracing::{info, warn};

use super::{Shared, StepContext};
use crate::mlflow::{Client, MlflowConfig, MlflowError, Point};
use crate::records::{EventKind, MlflowIds};
use crate::store::ModelVersion;
use crate::train::card::{CARD_FILE, ModelCard};

/// The per-epoch series a model card's training history may carry, as MLflow metric keys.
const PER_EPOCH: [&str; 6] = [
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "valid_f1",
    "valid_rmse",
    "valid_r2",
];

/// Mirror a trained version once: a run (found again by its tags after a crash, never
/// created twice once it exists), params, per-epoch metrics, the model card, a registered
/// model version. Best effort.
pub async fn version(ctx: &StepContext, m: &MlflowConfig, v: &ModelVersion) {
    if v.lineage.mlflow.is_some() {
        return;
    }
    let (pipeline, cycle) = (ctx.cycle.pipeline.as_str(), ctx.cycle.id);
    match mirror(ctx, m, v).await {
        Ok(ids) => {
            info!(
                pipeline,
                cycle,
                version = v.version,
                run = ids.run_id,
                mlflow_version = ids.version,
                "mirrored to MLflow"
            );
            if let Err(e) = ctx.store().set_version_mlflow(v.id, &ids).await {
                warn!(pipeline, cycle, error = %e, "cannot record the MLflow ids");
            }
        }
        Err(e) => {
            failed(
                &ctx.shared,
                pipeline,
                Some(cycle),
                "MLflow mirror",
                e.to_string(),
            )
            .await
        }
    }
}

async fn mirror(
    ctx: &StepContext,
    m: &MlflowConfig,
    v: &ModelVersion,
) -> Result<MlflowIds, MlflowError> {
    let (pipeline, cycle) = (ctx.cycle.pipeline.as_str(), ctx.cycle.id);
    let client = Client::new(m)?;
    let exp = client.experiment(&m.experiment).await?;
    let start = v.created_at.timestamp_millis();
    let (run, artifacts) = match client.find_run(&exp, pipeline, cycle).await? {
        Some((run, artifacts, _)) => (run, artifacts),
        None => {
            let tags = [
                ("retraind.pipeline", pipeline.to_string()),
                ("retraind.cycle", cycle.to_string()),
                ("retraind.version", v.version.to_string()),
                ("mlflow.source.name", "retraind".to_string()),
            ];
            let name = format!("{pipeline}-v{}", v.version);
            client.create_run(&exp, &name, &tags, start).await?
        }
    };
    let dir = std::path::PathBuf::from(&v.path);
    let (card_bytes, card) = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(dir.join(CARD_FILE)).unwrap_or_default();
        (bytes, ModelCard::load(Path::new(&dir)))
    })
    .await
    .unwrap_or_default();
    client
        .log(
            &run,
            &params(v, card.as_ref()),
            &points(v, card.as_ref()),
            start,
        )
        .await?;
    client
        .upload(&artifacts, "model/card.json", card_bytes)
        .await?;
    client
        .finish(&run, true, ctx.now().timestamp_millis())
        .await?;
    let version = client
        .register(&m.registered_model, &format!("{artifacts}/model"), &run)
        .await?;
    Ok(MlflowIds {
        experiment_id: exp,
        run_id: run,
        registered_model: m.registered_model.clone(),
        version,
    })
}

/// The run's params: the backend, the version, the config hash and the trainer's settings.
fn params(v: &ModelVersion, card: Option<&ModelCard>) -> Vec<(String, String)> {
    let backend = if v.lineage.backend.is_empty() {
        "burn"
    } else {
        &v.lineage.backend
    };
    let mut params = vec![
        ("backend".to_string(), backend.to_string()),
        ("retraind_version".to_string(), v.version.to_string()),
        ("config_hash".to_string(), v.lineage.config_hash.clone()),
    ];
    if let Some(settings) = card.and_then(|c| c.config.as_object()) {
        for (k, val) in settings {
            params.push((
                k.clone(),
                match val {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            ));
        }
    }
    params
}

/// Per-epoch series from the card's training history, then every summary metric at step
/// 0 that has no series of its own (a trainer without a history still gets its values).
fn points(v: &ModelVersion, card: Option<&ModelCard>) -> Vec<Point> {
    let mut points = Vec::new();
    let history = card
        .and_then(|c| c.training.as_ref())
        .map(|t| t.history.as_slice())
        .unwrap_or_default();
    for e in history {
        let step = e.epoch as i64;
        let values = [
            Some(e.train_loss),
            Some(e.valid_loss),
            e.valid_accuracy,
            e.valid_f1,
            e.valid_rmse,
            e.valid_r2,
        ];
        for (key, value) in PER_EPOCH.iter().zip(values) {
            if let Some(value) = value.filter(|x| x.is_finite()) {
                points.push(Point {
                    key: key.to_string(),
                    value,
                    step,
                });
            }
        }
    }
    let series: BTreeSet<String> = points.iter().map(|p| p.key.clone()).collect();
    let summary = serde_json::to_value(&v.metrics).unwrap_or_default();
    if let Some(metrics) = summary.as_object() {
        for (key, value) in metrics.iter().filter(|(k, _)| !series.contains(k.as_str())) {
            if let Some(value) = value.as_f64() {
                points.push(Point {
                    key: key.clone(),
                    value,
                    step: 0,
                });
            }
        }
    }
    points
}

/// After a champion move: MLflow's `champion` and `previous` aliases follow ours.
pub async fn aliases(shared: &Shared, pipeline: &str, cycle: Option<i64>, m: &MlflowConfig) {
    let result: Result<(), String> = async {
        let client = Client::new(m).map_err(|e| e.to_string())?;
        for alias in ["champion", "previous"] {
            let Some(v) = shared
                .store
                .alias(pipeline, alias)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            if let Some(ids) = &v.lineage.mlflow {
                client
                    .set_alias(&m.registered_model, alias, &ids.version)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        failed(shared, pipeline, cycle, "MLflow alias update", e).await;
    }
}

/// A failed MLflow call: logged and kept as an event; the cycle goes on.
async fn failed(shared: &Shared, pipeline: &str, cycle: Option<i64>, what: &str, e: String) {
    warn!(pipeline, cycle, error = %e, "{what} failed; the cycle goes on");
    let _ = shared
        .event(
            pipeline,
            cycle,
            EventKind::Mlflow,
            &format!("{what} failed: {e}"),
        )
        .await;
}
