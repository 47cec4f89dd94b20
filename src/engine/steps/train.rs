//! `training`: train a candidate on the newest labelled data — the labelled rows of the
//! current window minus the gate's holdout (an unlabelled window falls back to the
//! reference) — with the pipeline's trainer, off the async runtime, stoppable by shutdown
//! and `train.timeout`. The model directory is written in staging (model, card, the training
//! rows that become the next checks' reference), moved into place, and registered with the
//! transition to `trained` in one transaction. A remote run's id is stored before it is
//! polled, so a restart resumes it instead of starting another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::StepResult;
use crate::artifacts;
use crate::config::Pipeline;
use crate::data::{self, Roles, Table};
use crate::engine::{Shared, StepContext, StepError};
use crate::metrics::Metrics;
use crate::records::{CycleInputs, DvcDigests, EventKind, Lineage, TrainingData, VersionMetrics};
use crate::source;
use crate::splits;
use crate::store::NewVersion;
use crate::train::card::{CARD_FILE, ModelCard};
use crate::train::{
    self, Backend, CancelFlag, EpochReport, TrainError, TrainOutput, TrainRequest, Trainer,
};

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    // Registered already (a crash after the commit, before the drive loop noticed): done.
    if ctx.store().version_for_cycle(ctx.cycle.id).await?.is_some() {
        return Ok(StepResult::Unchanged);
    }
    let final_dir = artifacts::model_dir(ctx.state_dir(), &ctx.cycle.pipeline, ctx.cycle.id);
    // A training that finished (its directory moved into place, durably, card and all)
    // but whose registration was lost — the store went away, or the daemon with it — is
    // registered now, never repeated.
    if let Some((new, reason)) = finished_earlier(ctx, &final_dir).await? {
        return Ok(StepResult::Register(Box::new(new), reason));
    }
    let (roles, reference, current) = ctx.tables().await?;
    let (data, source_name) = training_rows(ctx, &roles, reference, current)?;
    let staging = artifacts::staging_dir(ctx.state_dir(), &ctx.cycle.pipeline, ctx.cycle.id);
    // A leftover of an attempt interrupted before it finished is never registered: start
    // clean.
    let dirs = [staging.clone(), final_dir.clone()];
    Shared::blocking(move || {
        for d in &dirs {
            artifacts::remove_dir_if_exists(d)?;
        }
        Ok(())
    })
    .await?;
    // A remote run this cycle started before a restart: resume it, never start another.
    let remote_run = ctx
        .store()
        .events(ctx.cycle.id)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.kind == EventKind::RemoteRun)
        .map(|e| e.message);
    let request = TrainRequest {
        pipeline: ctx.cycle.pipeline.clone(),
        cycle_id: ctx.cycle.id,
        data,
        roles: roles.clone(),
        out_dir: staging.clone(),
        inputs: ctx.cycle.inputs.clone(),
        remote_run,
        record_remote_run: recorder(ctx),
        timeout: ctx.pipeline.train.timeout,
    };
    // Every store read happens before the training: a store error after it would re-run
    // the step, and with it the training.
    let parent = ctx.champion().await?.map(|v| v.version);
    let output = match train(ctx, &request).await {
        Ok(output) => output,
        Err(e) => {
            // A failed attempt leaves nothing behind (its copy of the training rows
            // included); a retry starts clean anyway.
            let _ = Shared::blocking(move || Ok(artifacts::remove_dir_if_exists(&staging)?)).await;
            return Err(e);
        }
    };
    let dirs = (staging, final_dir);
    let registered = register(ctx, request, &output, source_name, dirs, parent).await?;
    ctx.metrics()
        .training_duration
        .with_label_values(&[&ctx.cycle.pipeline])
        .set(output.duration_seconds);
    Ok(StepResult::Register(Box::new(registered), trained(&output)))
}

/// The reason of a `training → trained` transition.
fn trained(output: &TrainOutput) -> String {
    format!(
        "trained in {:.1}s, {} epochs, {}",
        output.duration_seconds,
        output.epochs_run,
        output.headline()
    )
}

/// The version a finished earlier attempt of this cycle left in `final_dir`, read from its
/// model card: a directory there is complete (it is renamed into place only when finished
/// and flushed), so its card says what to register.
async fn finished_earlier(
    ctx: &StepContext,
    final_dir: &Path,
) -> Result<Option<(NewVersion, String)>, StepError> {
    let card_path = final_dir.join(CARD_FILE);
    let card = Shared::blocking(move || {
        Ok(std::fs::read(&card_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ModelCard>(&bytes).ok()))
    })
    .await?;
    let Some(card) = card.filter(|c| c.cycle == ctx.cycle.id) else {
        return Ok(None);
    };
    let (Some(lineage), Some(output)) = (card.lineage, card.training) else {
        return Ok(None);
    };
    let reason = format!(
        "{} (a finished training of an earlier attempt, registered without training again)",
        trained(&output)
    );
    warn!(
        pipeline = ctx.cycle.pipeline,
        cycle = ctx.cycle.id,
        "registering the training an earlier attempt finished"
    );
    let new = NewVersion {
        pipeline: ctx.cycle.pipeline.clone(),
        cycle_id: ctx.cycle.id,
        path: final_dir.display().to_string(),
        metrics: card.metrics,
        lineage,
    };
    Ok(Some((new, reason)))
}

/// The rows to train on and where they came from: the current window's labelled rows minus
/// the gate's holdout, or the reference when the window has no labels.
fn training_rows(
    ctx: &StepContext,
    roles: &Roles,
    reference: Table,
    current: Table,
) -> Result<(Table, &'static str), StepError> {
    let p = &ctx.pipeline;
    Ok(match current.labelled() {
        Some(labelled) => {
            let (_, rest) = splits::holdout_split(
                labelled.target.as_deref(),
                labelled.rows,
                p.gate.holdout_share,
                ctx.cycle.id,
                p.task,
            );
            (labelled.take(&rest), "current")
        }
        None => (
            reference
                .labelled()
                .ok_or_else(|| StepError::Train(TrainError::NoLabels(roles.target.clone())))?,
            "reference",
        ),
    })
}

/// Stores a remote run's id as an event of the cycle before the trainer polls it.
fn recorder(ctx: &StepContext) -> train::RemoteRunRecorder {
    let (shared, pipeline, cycle) = (ctx.shared.clone(), ctx.cycle.pipeline.clone(), ctx.cycle.id);
    let handle = tokio::runtime::Handle::current();
    // Called from the trainer's thread, which may itself be inside `block_on`: the write
    // runs as a task on the runtime and the trainer waits for its answer.
    train::RemoteRunRecorder(Some(Arc::new(move |id: &str| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (shared, pipeline, id) = (shared.clone(), pipeline.clone(), id.to_string());
        handle.spawn(async move {
            let r = shared
                .event(&pipeline, Some(cycle), EventKind::RemoteRun, &id)
                .await;
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })))
}

/// Every epoch's progress, as gauges and a log line.
fn progress(metrics: &Metrics, pipeline: &str, cycle: i64, e: &EpochReport) {
    metrics
        .training_epoch
        .with_label_values(&[pipeline])
        .set(e.epoch as i64);
    metrics
        .training_loss
        .with_label_values(&[pipeline, "train"])
        .set(e.train_loss);
    metrics
        .training_loss
        .with_label_values(&[pipeline, "valid"])
        .set(e.valid_loss);
    info!(
        pipeline,
        cycle,
        epoch = e.epoch,
        train_loss = e.train_loss,
        valid_loss = e.valid_loss,
        valid_accuracy = e.valid_accuracy,
        valid_f1 = e.valid_f1,
        valid_rmse = e.valid_rmse,
        valid_r2 = e.valid_r2,
        "epoch finished"
    );
}

/// Run the trainer on the blocking pool until it finishes, `train.timeout` passes (the
/// trainer is told, and a remote run is terminated) or the daemon shuts down (the cycle
/// resumes on the next start).
async fn train(ctx: &StepContext, request: &TrainRequest) -> Result<TrainOutput, StepError> {
    let trainer: Arc<dyn Trainer> = ctx.parts.trainer.clone();
    let cancel = CancelFlag::default();
    let (metrics, pipeline, cycle) = (
        ctx.metrics().clone(),
        ctx.cycle.pipeline.clone(),
        ctx.cycle.id,
    );
    info!(
        pipeline,
        cycle,
        backend = trainer.name(),
        rows = request.data.rows,
        "training started"
    );
    let (request_t, cancel_t) = (request.clone(), cancel.clone());
    let mut handle = tokio::task::spawn_blocking(move || {
        let report = |e: &EpochReport| progress(&metrics, &pipeline, cycle, e);
        trainer.train(&request_t, &cancel_t, &report)
    });
    let timeout = request.timeout;
    let result = tokio::select! {
        r = &mut handle => r,
        _ = ctx.shared.clock.timer(timeout) => {
            cancel.time_out();
            // A trainer with more to say (a terminated remote run) says it; else the
            // timeout is the reason.
            return Err(match handle.await {
                Ok(Err(e)) if !matches!(e, TrainError::Cancelled) => StepError::Train(e),
                _ => StepError::Timeout(timeout),
            });
        }
        _ = ctx.shared.shutdown.cancelled() => {
            cancel.cancel();
            let _ = handle.await;
            info!(pipeline = ctx.cycle.pipeline, cycle, "training interrupted by shutdown; will resume on next start");
            return Err(StepError::Interrupted);
        }
    };
    match result {
        Ok(r) => r.map_err(StepError::Train),
        Err(e) => Err(StepError::Invalid(format!("training thread failed: {e}"))),
    }
}

/// Write the training rows and the card into staging, move the directory into place, and
/// describe the version to register.
async fn register(
    ctx: &StepContext,
    request: TrainRequest,
    output: &TrainOutput,
    source_name: &str,
    (staging, final_dir): (PathBuf, PathBuf),
    parent_version: Option<i64>,
) -> Result<NewVersion, StepError> {
    let p = &ctx.pipeline;
    let rows = request.data.rows;
    let data_path = staging.join(artifacts::TRAINING_DATA);
    let final_data = final_dir.join(artifacts::TRAINING_DATA);
    let (hash, profile_hash, size_bytes, dvc) = Shared::blocking({
        let (staging, inputs) = (staging.clone(), request.inputs.clone());
        move || {
            // The rows this model learned from: the next checks' reference, and their
            // profile, which the checks read instead while this version is the champion.
            data::write_parquet(&request.data, &request.roles, &data_path)?;
            let (hash, bytes) = std::fs::read(&data_path)
                .map(|b| (blake3::hash(&b).to_hex().to_string(), b.len() as u64))
                .unwrap_or_default();
            let path = final_data.display().to_string();
            let source = data::Fingerprint {
                path: path.clone(),
                blake3: hash.clone(),
                bytes,
                rows,
                schema: data::stream::file_schema(&data_path)?,
                files: vec![data::FileDigest {
                    path,
                    blake3: hash.clone(),
                    bytes,
                }],
            };
            let profile =
                data::stream::StoredProfile::of_table(&request.data, &request.roles, source)
                    .write(&staging.join(artifacts::REFERENCE_PROFILE))?;
            Ok((
                hash,
                profile,
                artifacts::dir_size(&staging),
                dvc_digests(inputs.as_ref()),
            ))
        }
    })
    .await?;
    let config_hash = Shared::blocking({
        let path = ctx.config().source.clone();
        move || Ok(config_hash(&path))
    })
    .await?;
    let lineage = Lineage {
        backend: ctx.parts.trainer.name().to_string(),
        training_data: TrainingData {
            path: final_dir
                .join(artifacts::TRAINING_DATA)
                .display()
                .to_string(),
            rows,
            blake3: hash,
            source: source_name.to_string(),
            holdout_share: p.gate.holdout_share,
            profile_blake3: Some(profile_hash),
        },
        inputs: ctx.cycle.inputs.clone(),
        dvc,
        remote_run_id: output.remote_run.clone(),
        parent_version,
        trigger_cycle: ctx.cycle.id,
        trigger_report: format!("cycle-{}", ctx.cycle.id),
        config_hash,
        mlflow: None,
    };
    let metrics = version_metrics(output, size_bytes);
    let card = ModelCard {
        format: output.format.clone(),
        task: p.task,
        backend: lineage.backend.clone(),
        pipeline: ctx.cycle.pipeline.clone(),
        cycle: ctx.cycle.id,
        metrics: metrics.clone(),
        lineage: Some(lineage.clone()),
        training: Some(output.clone()),
        config: trainer_settings(p),
    };
    let text = serde_json::to_vec_pretty(&card).unwrap_or_default();
    let (s, f) = (staging, final_dir.clone());
    Shared::blocking(move || {
        artifacts::write_atomic(&s.join(CARD_FILE), &text)?;
        artifacts::move_into_place(&s, &f)?;
        Ok(())
    })
    .await?;
    Ok(NewVersion {
        pipeline: ctx.cycle.pipeline.clone(),
        cycle_id: ctx.cycle.id,
        path: final_dir.display().to_string(),
        metrics,
        lineage,
    })
}

/// What training reported, as the version's metrics.
fn version_metrics(output: &TrainOutput, size_bytes: u64) -> VersionMetrics {
    let mut m = VersionMetrics {
        valid_loss: output.valid_loss,
        epochs_run: output.epochs_run,
        best_epoch: output.best_epoch,
        train_rows: output.train_rows,
        duration_seconds: output.duration_seconds,
        model_size_mb: size_bytes as f64 / 1e6,
        ..VersionMetrics::default()
    };
    if let Some(a) = output.valid_accuracy {
        m.set_named("valid_accuracy", a);
    }
    for (k, v) in &output.extra_metrics {
        m.set_named(k, *v);
    }
    m
}

/// The DVC md5 of each input that has a `.dvc` file beside it. Blocking.
fn dvc_digests(inputs: Option<&CycleInputs>) -> DvcDigests {
    DvcDigests {
        reference: inputs.and_then(|i| source::dvc_md5(&i.reference.path)),
        current: inputs.and_then(|i| source::dvc_md5(&i.current.path)),
    }
}

/// The trainer's settings for the model card (and so the MLflow params); environment values
/// may be secrets, so only their names are kept.
fn trainer_settings(p: &Pipeline) -> serde_json::Value {
    let value = match p.train.backend {
        Backend::Burn => serde_json::to_value(&p.train.burn),
        Backend::Command => serde_json::to_value(p.train.command.as_ref().map(|c| {
            let mut c = c.clone();
            c.scoring = c.scoring.masked();
            c
        })),
        Backend::Kfp => serde_json::to_value(p.train.kfp.as_ref().map(|k| {
            let mut k = k.clone();
            k.scoring = k.scoring.masked();
            k
        })),
    };
    value.unwrap_or_default()
}

/// SHA-256 of the config file's bytes, for lineage. Blocking.
pub fn config_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(b)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::cycle::CycleState;
    use crate::engine::StepResult;
    use crate::engine::testkit::Kit;

    /// The first model trains on the window minus the gate's holdout; its directory holds
    /// the model, the card, the training rows and their profile, and the version to
    /// register carries the lineage (no parent) and the training metrics.
    #[tokio::test]
    async fn a_candidate_is_trained_written_and_described() {
        let kit = Kit::new().await;
        kit.write_today(Kit::NORMAL, 1000);
        let ctx = kit.run_until(CycleState::Training).await;
        let StepResult::Register(version, reason) = super::run(&ctx).await.unwrap() else {
            panic!("expected a version to register");
        };
        assert!(reason.starts_with("trained in "), "{reason}");
        let dir = std::path::Path::new(&version.path);
        for f in [
            "card.json",
            "training-data.parquet",
            "reference.profile",
            "model.bpk",
            "preprocess.json",
        ] {
            assert!(dir.join(f).is_file(), "{f} in {}", dir.display());
        }
        let l = &version.lineage;
        assert_eq!((l.backend.as_str(), l.parent_version), ("burn", None));
        assert_eq!(
            (l.training_data.rows, l.training_data.source.as_str()),
            (700, "current")
        );
        assert_eq!(l.trigger_cycle, ctx.cycle.id);
        assert_eq!(l.config_hash.len(), 64);
        assert!(version.metrics.epochs_run >= 1);
        assert!(
            version
                .metrics
                .valid(crate::performance::Metric::Accuracy)
                .unwrap()
                > 0.8
        );
    }
}
