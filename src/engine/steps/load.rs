//! `loading`: find and fingerprint the two windows. The reference is the rows the champion
//! was trained on (kept beside its weights), unless the pipeline fixes it or no champion has
//! them yet; the current window is the day's data. Remote inputs land in the content
//! addressed input cache, so every later step re-reads the bytes fingerprinted here.

use std::path::PathBuf;

use super::StepResult;
use crate::artifacts;
use crate::cycle::CycleState;
use crate::data::{self, ReferenceSource};
use crate::engine::{Shared, StepContext, StepError};
use crate::records::CycleInputs;
use crate::source;
use crate::store::CycleUpdate;

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let data_cfg = ctx.pipeline.data.clone();
    let cache = artifacts::inputs_dir(ctx.state_dir());
    let current_loc = data_cfg.current_location(&ctx.cycle.cycle_date)?;
    let champion = ctx.champion().await?;
    let wanted = match data_cfg.reference_source {
        ReferenceSource::Champion => champion
            .as_ref()
            .map(|v| (v.version, PathBuf::from(&v.path))),
        ReferenceSource::Fixed => None,
    };
    // The multivariate test needs the rows themselves; the per-feature tests and the
    // quality gate read the rows' stored profile when the champion has one.
    let profile_will_do = ctx.pipeline.drift.multivariate.is_none();
    let champion_rows: Option<(i64, PathBuf, Option<PathBuf>)> = match wanted {
        Some((v, dir)) => {
            Shared::blocking(move || {
                let (rows, profile) = (
                    dir.join(artifacts::TRAINING_DATA),
                    dir.join(artifacts::REFERENCE_PROFILE),
                );
                let profile = (profile_will_do && profile.is_file()).then_some(profile);
                Ok(rows.is_file().then_some((v, rows, profile)))
            })
            .await?
        }
        None => None,
    };
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
    let inputs = Shared::blocking(move || {
        let (roles, reference, ref_rows, profile) = match &champion_rows {
            Some((_, _, Some(profile))) => {
                let stored = data::stream::StoredProfile::read(profile)?;
                let (path, rows) = (profile.display().to_string(), stored.source.rows);
                (stored.roles, stored.source, rows, Some(path))
            }
            Some((_, path, None)) => {
                let (roles, t) =
                    data::load_inferred(&data::Input::file(path), &data_cfg.role_spec(), true)?;
                (roles, t.fingerprint, t.rows, None)
            }
            None => {
                let input = source::resolve(&data_cfg.reference, &cache, &data_cfg.s3)?;
                let (roles, t) = data::load_inferred(&input, &data_cfg.role_spec(), true)?;
                let t = match window {
                    Some((from, to)) => t.window(from, to),
                    None => t,
                };
                (roles, t.fingerprint, t.rows, None)
            }
        };
        let cur_input = source::resolve(&current_loc, &cache, &data_cfg.s3)?;
        let current = data::load(&cur_input, &roles, false)?;
        let labelled = current.labelled_rows().len();
        Ok((
            CycleInputs {
                roles,
                reference,
                reference_from,
                reference_source,
                reference_window: window,
                current: current.fingerprint,
                labelled: labelled > 0,
                labelled_rows: labelled,
                reference_profile: profile,
            },
            ref_rows,
            current.rows,
        ))
    })
    .await?;
    let (inputs, ref_rows, cur_rows) = inputs;
    let reason = format!(
        "loaded reference ({}, {ref_rows} rows) and current window {} ({cur_rows} rows, {} labelled)",
        inputs.reference_from, ctx.cycle.cycle_date, inputs.labelled_rows,
    );
    let update = CycleUpdate {
        inputs: Some(inputs),
        ..CycleUpdate::default()
    };
    Ok(ctx.to(CycleState::Checking, reason, update))
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
}
