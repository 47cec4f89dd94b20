//! `loading`: find and fingerprint the two windows. The reference is the rows the champion
//! was trained on (kept beside its weights), unless the pipeline fixes it or no champion has
//! them yet; the current window is the day's data. Remote inputs land in the content
//! addressed input cache, so every later step re-reads the bytes fingerprinted here. A
//! window in Spark (`[pipeline.data.spark]`) is summarised there on the reference's bins,
//! and its profile is what lands in the cache.

use std::path::PathBuf;

use super::StepResult;
use crate::artifacts;
use crate::cycle::CycleState;
use crate::data::stream::StoredProfile;
use crate::data::{self, DataConfig, Fingerprint, ReferenceSource, Roles};
use crate::engine::{Shared, StepContext, StepError};
use crate::profile::Profile;
use crate::records::CycleInputs;
use crate::secret::Secret;
use crate::source;
use crate::spark::SparkConfig;
use crate::store::CycleUpdate;

/// The champion whose training rows are the reference: version, rows, stored profile.
type ChampionRows = (i64, PathBuf, Option<PathBuf>);

/// The reference as loaded.
struct ReferenceSide {
    roles: Roles,
    fingerprint: Fingerprint,
    rows: usize,
    /// The champion's stored profile read instead of its rows.
    profile_path: Option<String>,
    /// Its profile, when the current window is summarised elsewhere on its bins.
    summary: Option<Profile>,
}

/// The current window as loaded.
struct CurrentSide {
    fingerprint: Fingerprint,
    labelled_rows: usize,
    profile_path: Option<String>,
}

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let data_cfg = ctx.pipeline.data.clone();
    let champion_rows = champion_rows(ctx).await?;
    // The configured window cuts only the configured reference, not the champion's rows.
    let window = match champion_rows {
        Some(_) => None,
        None => data_cfg.reference_window,
    };
    let reference_from = match &champion_rows {
        Some((v, _, Some(_))) => format!("champion v{v}'s training rows (stored profile)"),
        Some((v, _, None)) => format!("champion v{v}'s training rows"),
        None => data_cfg.reference.describe(),
    };
    let reference_source = match champion_rows {
        Some(_) => ReferenceSource::Champion,
        None => ReferenceSource::Fixed,
    };
    let cache = artifacts::inputs_dir(ctx.state_dir());
    let plan = ctx.pipeline.check;
    // The day's files, found (and fetched) first: their size says how they are read.
    let local = match &data_cfg.spark {
        Some(_) => None,
        None => {
            let (location, dir, s3) = (
                data_cfg.current_location(&ctx.cycle.cycle_date)?,
                cache.clone(),
                data_cfg.s3.clone(),
            );
            Some(Shared::blocking(move || Ok(source::resolve(&location, &dir, &s3)?)).await?)
        }
    };
    let streamed = local.as_ref().is_some_and(|i| plan.streams(input_bytes(i)));
    let (cfg, dir) = (data_cfg.clone(), cache.clone());
    let summarise = data_cfg.spark.is_some() || streamed;
    let reference =
        Shared::blocking(move || load_reference(&cfg, champion_rows, window, &dir, summarise))
            .await?;
    let current = match (&data_cfg.spark, local) {
        (Some(spark), _) => spark_window(ctx, spark, &reference, cache).await?,
        (None, Some(input)) if streamed => {
            let (roles, bins) = (reference.roles.clone(), ctx.pipeline.drift.bins);
            let expect = reference.summary.as_ref().map(|p| p.expectation(bins));
            Shared::blocking(move || {
                let streamed = data::stream::profile_input(
                    &input,
                    data::stream::RolesFrom::Given(&roles),
                    &plan,
                    &expect.unwrap_or_default(),
                )?;
                keep_profile(
                    &cache,
                    StoredProfile {
                        source: streamed.fingerprint,
                        roles,
                        profile: streamed.profile,
                    },
                )
            })
            .await?
        }
        (None, input) => {
            let roles = reference.roles.clone();
            Shared::blocking(move || {
                let input = input.ok_or_else(|| StepError::Invalid("no current window".into()))?;
                let current = data::load(&input, &roles, false)?;
                Ok(CurrentSide {
                    labelled_rows: current.labelled_rows().len(),
                    fingerprint: current.fingerprint,
                    profile_path: None,
                })
            })
            .await?
        }
    };
    let (ref_rows, cur_rows) = (reference.rows, current.fingerprint.rows);
    let inputs = CycleInputs {
        roles: reference.roles,
        reference: reference.fingerprint,
        reference_from,
        reference_source,
        reference_window: window,
        current: current.fingerprint,
        labelled: current.labelled_rows > 0,
        labelled_rows: current.labelled_rows,
        reference_profile: reference.profile_path,
        current_profile: current.profile_path,
    };
    let summarised = match (&inputs.current_profile, &data_cfg.spark) {
        (Some(_), Some(_)) => format!(
            ", summarised by Spark: {} bytes received",
            inputs.current.bytes
        ),
        (Some(_), None) => format!(
            ", {} bytes of files read in bounded memory into a profile (over half of check.memory_budget)",
            inputs.current.bytes
        ),
        (None, _) => String::new(),
    };
    let reason = format!(
        "loaded reference ({}, {ref_rows} rows) and current window {} ({cur_rows} rows, {} labelled{summarised})",
        inputs.reference_from, ctx.cycle.cycle_date, inputs.labelled_rows,
    );
    let update = CycleUpdate {
        inputs: Some(inputs),
        ..CycleUpdate::default()
    };
    Ok(ctx.to(CycleState::Checking, reason, update))
}

/// The champion's training rows (and stored profile) when they are the reference.
async fn champion_rows(ctx: &StepContext) -> Result<Option<ChampionRows>, StepError> {
    let champion = ctx.champion().await?;
    let wanted = match ctx.pipeline.data.reference_source {
        ReferenceSource::Champion => champion.map(|v| (v.version, PathBuf::from(&v.path))),
        ReferenceSource::Fixed => None,
    };
    // The multivariate test needs the rows themselves; the per-feature tests and the
    // quality gate read the rows' stored profile when the champion has one.
    let profile_will_do = ctx.pipeline.drift.multivariate.is_none();
    let Some((v, dir)) = wanted else {
        return Ok(None);
    };
    Shared::blocking(move || {
        let (rows, profile) = (
            dir.join(artifacts::TRAINING_DATA),
            dir.join(artifacts::REFERENCE_PROFILE),
        );
        let profile = (profile_will_do && profile.is_file()).then_some(profile);
        Ok(rows.is_file().then_some((v, rows, profile)))
    })
    .await
}

/// Read (or, for a stored profile, only describe) the reference; with `summarise`, also
/// its profile as the check step builds it, whose bins the current window is counted on.
fn load_reference(
    cfg: &DataConfig,
    champion_rows: Option<ChampionRows>,
    window: Option<(i64, i64)>,
    cache: &std::path::Path,
    summarise: bool,
) -> Result<ReferenceSide, StepError> {
    let side = |roles: Roles, t: data::Table| {
        let summary = summarise.then(|| super::check::exact_profile(&t, &Default::default()));
        ReferenceSide {
            roles,
            rows: t.rows,
            fingerprint: t.fingerprint,
            profile_path: None,
            summary,
        }
    };
    Ok(match champion_rows {
        Some((_, _, Some(profile))) => {
            let stored = StoredProfile::read(&profile)?;
            ReferenceSide {
                roles: stored.roles,
                rows: stored.source.rows,
                fingerprint: stored.source,
                profile_path: Some(profile.display().to_string()),
                summary: summarise.then_some(stored.profile),
            }
        }
        Some((_, path, None)) => {
            let (roles, t) =
                data::load_inferred(&data::Input::file(&path), &cfg.role_spec(), true)?;
            side(roles, t)
        }
        None => {
            let input = source::resolve(&cfg.reference, cache, &cfg.s3)?;
            let (roles, t) = data::load_inferred(&input, &cfg.role_spec(), true)?;
            let t = match window {
                Some((from, to)) => t.window(from, to),
                None => t,
            };
            side(roles, t)
        }
    })
}

/// Have Spark summarise the day's window on the reference's bins; keep the summary in the
/// input cache under its BLAKE3.
async fn spark_window(
    ctx: &StepContext,
    spark: &SparkConfig,
    reference: &ReferenceSide,
    cache: PathBuf,
) -> Result<CurrentSide, StepError> {
    let token = spark.token.as_ref().map(Secret::load).transpose()?;
    let expect = reference
        .summary
        .as_ref()
        .map(|p| p.expectation(ctx.pipeline.drift.bins))
        .unwrap_or_default();
    let source = spark.current_source(&ctx.cycle.cycle_date);
    let summarised = tokio::select! {
        s = crate::spark::summarise(&source, token, reference.roles.columns(), &expect, spark.epsilon) => s?,
        _ = ctx.shared.shutdown.cancelled() => return Err(StepError::Interrupted),
    };
    let stored = StoredProfile::of_spark(summarised, &reference.roles);
    Shared::blocking(move || keep_profile(&cache, stored)).await
}

/// Keep a window's profile in the input cache under its source's BLAKE3; the check step
/// reads it from there.
fn keep_profile(cache: &std::path::Path, stored: StoredProfile) -> Result<CurrentSide, StepError> {
    std::fs::create_dir_all(cache).map_err(|e| {
        StepError::Invalid(format!(
            "cannot create the input cache {}: {e}",
            cache.display()
        ))
    })?;
    let path = cache.join(format!(
        "{}.{}",
        stored.source.blake3,
        data::stream::PROFILE_EXTENSION
    ));
    stored.write(&path)?;
    Ok(CurrentSide {
        fingerprint: stored.source,
        labelled_rows: 0,
        profile_path: Some(path.display().to_string()),
    })
}

/// Bytes of an input's files (0 for one that cannot be read now: the read names it).
fn input_bytes(input: &data::Input) -> u64 {
    input
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use crate::engine::testkit::Kit;

    /// The first cycle reads the configured reference and today's window, fingerprints both,
    /// counts the labelled rows, and moves to `checking`.
    #[tokio::test]
    async fn the_first_cycle_fingerprints_the_configured_reference_and_the_window() {
        let kit = Kit::new().await;
        kit.write_today(Kit::NORMAL, 400);
        let ctx = kit.context_in(crate::cycle::CycleState::Loading).await;
        let result = super::run(&ctx).await.unwrap();
        let (to, reason, inputs) = kit.advanced(result);
        assert_eq!(to, crate::cycle::CycleState::Checking);
        let inputs = inputs.inputs.unwrap();
        assert_eq!(inputs.reference.rows, 1000);
        assert_eq!((inputs.current.rows, inputs.labelled_rows), (400, 400));
        assert_eq!(inputs.reference_source, crate::data::ReferenceSource::Fixed);
        assert_eq!(inputs.reference.blake3.len(), 64);
        assert_eq!(inputs.roles.target, "target");
        assert!(reason.contains("(400 rows, 400 labelled)"), "{reason}");
    }

    /// Load and check one cycle of today's window with `plan`: its inputs and stored report.
    async fn check_with(
        kit: &Kit,
        plan: crate::data::stream::Plan,
    ) -> (crate::records::CycleInputs, serde_json::Value, String) {
        use crate::cycle::CycleState;
        let mut ctx = kit.context_in(CycleState::Loading).await;
        ctx.pipeline.check = plan;
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        let id = ctx.cycle.id;
        kit.store()
            .transition(
                id,
                CycleState::Loading,
                to,
                &reason,
                update,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let mut ctx = kit.context_of(id).await;
        ctx.pipeline.check = plan;
        let (to, _, _) = kit.advanced(super::super::check::run(&ctx).await.unwrap());
        assert_eq!(to, CycleState::Decided);
        let report = kit.store().report(id).await.unwrap().unwrap();
        kit.finish(&ctx, CycleState::Failed).await;
        (ctx.inputs().unwrap().clone(), report, reason)
    }

    /// A window whose files take over half of `check.memory_budget` is read batch by batch
    /// into a profile kept in the input cache (sketched beyond the budget's exact share);
    /// the check reads that profile and reaches the whole read's verdicts. Its rows are not
    /// kept, so a step that needs them says why.
    #[tokio::test]
    async fn a_window_over_half_the_budget_is_profiled_in_bounded_memory() {
        use crate::data::stream::Plan;
        let kit = Kit::new().await;
        kit.write_today(Kit::DRIFTED, 8000);
        let (whole, want, _) = check_with(&kit, Plan::for_budget(2 << 30, 0.001)).await;
        assert_eq!((whole.current_profile, whole.labelled_rows), (None, 8000));
        let (inputs, got, reason) = check_with(&kit, Plan::for_budget(100_000, 0.001)).await;
        let cached = inputs.current_profile.clone().unwrap();
        assert!(
            cached.ends_with(&format!("{}.profile", inputs.current.blake3)),
            "{cached}"
        );
        assert_eq!((inputs.current.rows, inputs.labelled_rows), (8000, 0));
        assert_eq!(inputs.current.blake3, whole.current.blake3);
        assert!(
            reason.contains("read in bounded memory into a profile"),
            "{reason}"
        );
        let verdicts = |r: &serde_json::Value| -> Vec<(String, bool)> {
            r["drift"]["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap().to_string(),
                        f["drifted"].as_bool().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(verdicts(&got), verdicts(&want));
        assert_eq!(got["drift"]["dataset"]["drifted"], true);
        assert_eq!(
            got["drift"]["features"][0]["rank_error"]
                .as_f64()
                .map(|e| e > 0.0),
            Some(true)
        );
        assert_eq!(
            want["drift"]["features"][0]["rank_error"],
            serde_json::Value::Null
        );
        let mut ctx = kit.context_in(crate::cycle::CycleState::Loading).await;
        ctx.pipeline.check = Plan::for_budget(100_000, 0.001);
        let (_, _, update) = kit.advanced(super::run(&ctx).await.unwrap());
        ctx.cycle.inputs = update.inputs;
        let e = ctx.tables().await.unwrap_err().to_string();
        assert!(
            e.contains("only its profile was kept") && e.contains("memory_budget"),
            "{e}"
        );
    }
}
