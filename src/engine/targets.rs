//! Putting a version in place through a pipeline's deploy targets, for a deploy and for a
//! rollback alike.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::error;

use super::{Shared, StepError};
use crate::deploy::DeployTarget;
use crate::store::ModelVersion;

/// Put `version` in place through every target, in order. When one fails, the targets that
/// already ran are pointed back at `fallback` (the champion in place), so nothing outside
/// the store names a version the store does not.
pub async fn put_in_place(
    targets: Vec<Arc<dyn DeployTarget>>,
    state_dir: PathBuf,
    version: &ModelVersion,
    fallback: Option<ModelVersion>,
) -> Result<(), StepError> {
    let v = version.clone();
    Shared::blocking(move || {
        for (i, t) in targets.iter().enumerate() {
            if let Err(e) = t.deploy(&state_dir, &v, fallback.as_ref()) {
                let kept = match &fallback {
                    Some(f) => {
                        for done in &targets[..i] {
                            if let Err(r) = done.deploy(&state_dir, f, Some(&v)) {
                                error!(pipeline = f.pipeline, target = done.name(), error = %r, "cannot put the champion back in place");
                            }
                        }
                        format!("the champion stays v{}", f.version)
                    }
                    None => "there is no champion".to_string(),
                };
                return Err(StepError::Invalid(format!("{e}; {kept}")));
            }
        }
        Ok(())
    })
    .await
}
