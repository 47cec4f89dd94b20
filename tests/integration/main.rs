//! retraind's integration tests: one binary, a module per capability, shared helpers.

mod helpers;

mod kfp;

mod architecture;
mod bounded;
mod browser;
mod cli;
mod compat;
mod console;
mod failclosed;
mod faults;
mod fuzz;
mod guardrails;
mod ha;
mod hostile;
mod killpoints;
mod lifecycle;
mod mlflow;
mod nannyml;
mod ops;
mod properties;
mod retention;
mod security;
mod server;
mod sources;
mod spark;
mod store;
mod training;
