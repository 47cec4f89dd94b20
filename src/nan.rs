//! How a number that may be NaN travels through JSON: serde_json writes NaN as `null`, so a
//! field that may hold NaN reads `null` back as NaN instead of failing the whole document.

use serde::{Deserialize, Deserializer};

/// Deserialize a number that may have been stored as `null`: NaN when it was.
pub fn or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
