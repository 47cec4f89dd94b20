//! How a profile's bulk travels in its JSON file: exact values as base64 of little-endian
//! doubles (8 bytes a value rather than ~20 characters of decimal), sketches as base64 of
//! DataSketches' own bytes. Pure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

fn decode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: String = serde::Deserialize::deserialize(d)?;
    B64.decode(text.as_bytes())
        .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
}

pub mod doubles {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let bytes = decode(d)?;
        if bytes.len() % 8 != 0 {
            return Err(serde::de::Error::custom(format!(
                "{} bytes is not a whole number of doubles",
                bytes.len()
            )));
        }
        let values: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if values.windows(2).any(|w| w[0] > w[1]) || values.iter().any(|v| !v.is_finite()) {
            return Err(serde::de::Error::custom(
                "exact values must be finite and sorted",
            ));
        }
        Ok(values)
    }
}

pub mod sketch {
    use super::*;
    use crate::profile::Sketch;

    pub fn serialize<S: serde::Serializer>(v: &Sketch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v.to_bytes()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sketch, D::Error> {
        Sketch::from_bytes(&decode(d)?).map_err(serde::de::Error::custom)
    }
}
