//! `retraind predict`: score a file with a stored model version.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{open_store, pick_pipeline};
use crate::config::Config;

pub(super) async fn run(
    config_path: &Path,
    model: &str,
    input: &str,
    pipeline: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let config = Config::load(config_path)?;
    let p = pick_pipeline(&config, pipeline)?;
    let store = open_store(&config).await?;
    let version = match model.trim_start_matches('v').parse::<i64>() {
        Ok(n) => store.versions(&p.name).await?.into_iter().find(|v| v.version == n),
        Err(_) => store.alias(&p.name, model).await?,
    }
    .ok_or_else(|| anyhow::anyhow!("pipeline `{}` has no model `{model}`; use a version number or champion/previous (`retraind models` lists them)", p.name))?;
    let data_cfg = p.data.clone();
    let (dir, input) = (PathBuf::from(&version.path), input.to_string());
    let cache = config.daemon.state_dir.join("inputs");
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use super::progress::Report as _;
        let bar = super::progress::Bar::on_terminal();
        bar.stage(&format!("reading {input}"));
        let location = crate::source::Location::parse(&input, &std::env::current_dir()?)?;
        let input = crate::source::resolve(&location, &cache, &data_cfg.s3)?;
        use crate::train::card::ModelCard;
        let format = ModelCard::format_of(&dir);
        // A burn model names the columns it reads; a command or Kubeflow model reads the
        // pipeline's columns, taken from the file as a cycle takes them.
        let (model, table, task): (
            Box<dyn crate::train::Predictor>,
            crate::data::Table,
            crate::performance::Task,
        ) = if format.as_deref() == Some(crate::train::command::FORMAT) {
            let (_, table) = crate::data::load_inferred(&input, &data_cfg.role_spec(), false)?;
            let task = ModelCard::load(&dir).map(|c| c.task).unwrap_or_default();
            (crate::train::load_predictor(&dir)?, table, task)
        } else {
            let model = crate::train::burn::BurnModel::load(&dir)?;
            let pre = model.preprocess();
            let roles = crate::data::Roles {
                numerical: pre.numerical.iter().map(|(n, _, _)| n.clone()).collect(),
                categorical: pre.categorical.iter().map(|(n, _)| n.clone()).collect(),
                target: data_cfg.target.clone(),
                prediction: None,
                timestamp: None,
            };
            let table = crate::data::load(&input, &roles, false)?;
            let task = pre.task;
            (Box::new(model), table, task)
        };
        bar.stage(&format!("scoring {} rows", table.rows));
        let out = model.predict_scored(&table)?;
        bar.finish();
        // row, prediction, then a classifier's probability per class.
        let mut header = vec!["row".to_string(), "prediction".to_string()];
        header.extend(out.classes.iter().map(|c| format!("p_{c}")));
        let mut text = header.join(",") + "\n";
        let k = out.classes.len();
        for (i, label) in out.labels.iter().enumerate() {
            let mut row = vec![i.to_string(), label.clone()];
            row.extend(
                out.probabilities[i * k..(i + 1) * k]
                    .iter()
                    .map(|p| format!("{p:.6}")),
            );
            let _ = writeln!(text, "{}", row.join(","));
        }
        if let Some(labels) = &table.target {
            let idx = table.labelled_rows();
            if !idx.is_empty() {
                let scored = crate::performance::Scored {
                    labels: idx.iter().map(|&i| labels[i].clone()).collect(),
                    predicted: idx.iter().map(|&i| out.labels[i].clone()).collect(),
                    ..Default::default()
                };
                // Accuracy and weighted F1, or RMSE, MAE and R², on the labelled rows.
                let metrics: Vec<String> = task
                    .metrics(&scored)
                    .iter()
                    .filter(|(k, _)| !k.ends_with("_n"))
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                eprintln!("{} on {} labelled rows", metrics.join(", "), idx.len());
            }
        }
        Ok(text)
    })
    .await??;
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out_raw!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
