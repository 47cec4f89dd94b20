//! `retraind profile`: summarise data into a reference profile (`.profile`) that
//! `retraind check --reference` reads instead of the rows — per feature the exact sorted
//! values up to `--exact-limit`, else a KLL sketch; bin edges and counts follow from them;
//! category counts; the row count, the schema and the input's fingerprint. Many part files
//! (a glob) are read into one profile; `--merge` folds profiles of parts into one.

use super::progress::Report as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::check::{ColumnArgs, MemoryArgs};
use crate::data::stream::{self, RolesFrom, StoredProfile};
use crate::profile::{Summary, Values};

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Data to profile (CSV, Parquet or NDJSON): a path, a glob of part files, an
    /// http(s):// URL or s3://bucket/key.
    #[arg(long, required_unless_present = "merge", conflicts_with = "merge")]
    pub input: Option<String>,
    /// Profiles to merge into one (of parts with the same columns) instead of reading data.
    #[arg(long, num_args = 1..)]
    pub merge: Vec<PathBuf>,
    /// The profile to write (name it .profile for `retraind check --reference`).
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub columns: ColumnArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Values per numerical feature kept exactly; beyond, a sketch.
    #[arg(long, default_value_t = crate::profile::DEFAULT_EXACT_LIMIT)]
    pub exact_limit: usize,
}

/// Build (or merge) the profile and write it; the stored profile and its file's BLAKE3.
pub fn build(args: &ProfileArgs) -> anyhow::Result<(StoredProfile, String)> {
    let mut plan = args.memory.plan()?;
    plan.exact_cap = args.exact_limit;
    let stored = match &args.input {
        Some(input) => {
            let spec = args.columns.spec();
            let input = super::standalone_input(input)?;
            let bar = super::progress::Bar::on_terminal();
            bar.stage(&format!("reading {}", input.source));
            let streamed = stream::profile_input_with(
                &input,
                RolesFrom::Infer(&spec),
                &plan,
                &Default::default(),
                &|p| bar.read(p),
            )?;
            StoredProfile {
                source: streamed.fingerprint,
                roles: streamed.roles,
                profile: streamed.profile,
            }
        }
        None => merged(args, &plan)?,
    };
    let hash = stored.write(&args.output)?;
    Ok((stored, hash))
}

fn merged(args: &ProfileArgs, plan: &stream::Plan) -> anyhow::Result<StoredProfile> {
    let mut parts = args.merge.iter();
    let first = parts.next().context("--merge needs at least one profile")?;
    let mut stored = StoredProfile::read(first)?;
    let options = plan.options(stored.roles.numerical.len());
    for part in parts {
        let other = StoredProfile::read(part)?;
        stored
            .merge(other, &options)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot merge {} into {}", part.display(), first.display()))?;
    }
    Ok(stored)
}

/// One line per feature: kind, count, exact or sketched with ε.
fn summary(stored: &StoredProfile, hash: &str, output: &std::path::Path) -> String {
    use std::fmt::Write as _;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let mut out = format!(
        "{}: {} rows x {} features of {} ({} bytes read) -> {} ({bytes} bytes, blake3 {})\n",
        output.display(),
        stored.profile.rows,
        stored.profile.features.len(),
        stored.source.path,
        stored.source.bytes,
        output.display(),
        &hash[..16.min(hash.len())]
    );
    for f in &stored.profile.features {
        let _ = match &f.summary {
            Summary::Numerical(n) => match &n.values {
                Values::Exact(v) => writeln!(
                    out,
                    "  {:<24} numerical   {:>12} values, exact",
                    f.name,
                    v.len()
                ),
                Values::Sketch(s) => writeln!(
                    out,
                    "  {:<24} numerical   {:>12} values, sketched (rank error {:.2e})",
                    f.name,
                    s.n(),
                    s.epsilon()
                ),
                Values::Quantiles(t) => writeln!(
                    out,
                    "  {:<24} numerical   {:>12} values, {} quantiles (rank error {:.2e})",
                    f.name,
                    t.n,
                    t.quantiles.len(),
                    t.epsilon()
                ),
            },
            Summary::Categorical(c) => writeln!(
                out,
                "  {:<24} categorical {:>12} values, {} categories",
                f.name,
                c.present(),
                c.counts.len()
            ),
        };
    }
    out
}

pub(super) async fn run(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let output = args.output.clone();
    let (stored, hash) = tokio::task::spawn_blocking(move || build(&args)).await??;
    out!("{}", summary(&stored, &hash, &output));
    Ok(ExitCode::SUCCESS)
}
