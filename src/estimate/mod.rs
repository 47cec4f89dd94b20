//! Performance estimated without labels. Labels often arrive days or weeks after the
//! predictions; until then a degradation check that needs them is blind. This module
//! estimates what the labels will say: CBPE ([`cbpe`]) for classifiers, from their
//! calibrated probabilities ([`calibration`]), in chunks cut as NannyML cuts them
//! ([`chunks`]), with numbers equal to NannyML 0.13.1's ([`numpy`] holds the ports that make
//! the order-sensitive parts equal).
//!
//! Pure policy: must not do I/O, read configuration, or know about pipelines, stores or
//! files; the engine hands it typed predictions and gets typed estimates back.

pub mod calibration;
pub mod cbpe;
pub mod chunks;
pub mod numpy;

pub use cbpe::{Cbpe, CbpeError, CbpeMetric, ChunkEstimate, Estimate, Predictions, Thresholds};
