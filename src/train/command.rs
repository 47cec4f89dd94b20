//! The command backend: any program trains the model (PyTorch, scikit-learn, XGBoost …) and
//! another, or the same, scores it. This is how a team with its own training script adopts
//! retraind without rewriting it.
//!
//! Contract (documented in the README):
//! - training: `train.command.program` runs with `{train_path}` (Parquet of the training rows:
//!   feature columns and the target), `{model_dir}` (an empty folder to write the model into),
//!   `{metrics_path}` (where to write a JSON object of numbers, e.g.
//!   `{"valid_accuracy": 0.93}`; an optional `"history"` array of per-epoch objects), and
//!   `{pipeline}`, `{cycle}`, `{target}` substituted in every argument and `env` value;
//! - scoring: `train.command.predict` runs with `{model_dir}`, `{input_path}` (Parquet of the
//!   rows) and `{output_path}`, where it writes a CSV with a `prediction` column, one row per
//!   input row in order, and optionally `p_<class>` probability columns.
//!
//! The child runs in its own process group with a minimal environment (PATH, HOME, LANG,
//! LC_ALL, TZ, TMPDIR, USER, plus the configured `env`: never the daemon's secrets); stdout
//! and stderr become our log lines; on timeout or shutdown the whole group is killed, and so
//! is any process it left behind when it exits. Scoring may take at most 30 minutes. A non-zero exit, a missing or malformed
//! metrics file fails the step with the reason, and nothing is registered (the engine only
//! registers after a successful return).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{
    CancelFlag, EpochReport, Predictions, Predictor, TrainError, TrainOutput, TrainRequest,
    Trainer, io_err,
};
use crate::data::{Roles, Table, TableFormat};
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.train.command]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawCommand {
    pub program: Option<Vec<String>>,
    pub predict: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub data_format: Option<String>,
}

impl CommandConfig {
    /// Validate `raw` (the checker is at `pipeline[i].train.command`).
    pub fn from_raw(raw: RawCommand, files: Files, c: &mut Checker) -> CommandConfig {
        let program = argv(c, "program", &raw.program);
        let predict = argv(c, "predict", &raw.predict);
        CommandConfig {
            program,
            scoring: Scoring::from_raw(predict, raw.env, &raw.workdir, &raw.data_format, files, c),
        }
    }
}

/// A program and its arguments as a non-empty list.
fn argv(c: &mut Checker, key: &str, v: &Option<Vec<String>>) -> Vec<String> {
    match v {
        Some(a) if !a.is_empty() && !a[0].is_empty() => a.clone(),
        _ => {
            c.problem(key, "missing; write the program and its arguments as a list, e.g. [\"python3\", \"train.py\", \"--data\", \"{train_path}\"]");
            Vec::new()
        }
    }
}

impl Scoring {
    /// The settings with every environment value replaced by `***` (they may be secrets),
    /// for the model card.
    pub fn masked(&self) -> Scoring {
        let mut s = self.clone();
        for v in s.env.values_mut() {
            *v = "***".to_string();
        }
        s
    }

    /// The scoring settings shared by the command and Kubeflow backends (the checker is at
    /// their table).
    pub fn from_raw(
        predict: Vec<String>,
        env: Option<BTreeMap<String, String>>,
        workdir: &Option<String>,
        data_format: &Option<String>,
        files: Files,
        c: &mut Checker,
    ) -> Scoring {
        Scoring {
            predict,
            env: env.unwrap_or_default(),
            workdir: files.workdir(c, "workdir", workdir),
            data_format: c.choice(
                "data_format",
                data_format.as_deref(),
                TableFormat::Parquet,
                |w| match w {
                    "parquet" => Some(TableFormat::Parquet),
                    "csv" => Some(TableFormat::Csv),
                    _ => None,
                },
                |w| format!("`{w}` is not a format; use \"parquet\" (default) or \"csv\""),
            ),
        }
    }
}

/// `[pipeline.train.command]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandConfig {
    /// Program and arguments that train.
    pub program: Vec<String>,
    #[serde(flatten)]
    pub scoring: Scoring,
}

/// How a model trained outside retraind is scored (the command and remote backends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scoring {
    /// Program and arguments that score (see the module docs).
    pub predict: Vec<String>,
    /// Extra environment variables (values templated like the arguments).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the config file's folder).
    pub workdir: PathBuf,
    /// Format of `{train_path}` and `{input_path}`: parquet (default) or csv.
    #[serde(default)]
    pub data_format: TableFormat,
}

/// Model card format of command-trained models.
pub const FORMAT: &str = "command-v1";

/// Runs the configured program.
#[derive(Debug, Clone)]
pub struct CommandTrainer {
    pub config: CommandConfig,
}

fn template(text: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(text.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// Run `argv` to completion, logging its output, killing its process group on cancel.
/// Environment variables a child inherits from the daemon; everything else comes from `env`.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// How long a scoring command may run.
pub const PREDICT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn run(
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: &Path,
    vars: &[(&str, String)],
    cancel: &CancelFlag,
    deadline: Option<Instant>,
    what: &str,
) -> Result<(), TrainError> {
    let argv: Vec<String> = argv.iter().map(|a| template(a, vars)).collect();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| TrainError::Command(format!("{what}: no program configured")))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Not the daemon's environment (it may hold AWS keys or tokens): a few basics, and
        // what the config passes.
        .env_clear();
    for k in INHERITED_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, template(v, vars));
    }
    let mut child = cmd.spawn().map_err(|e| {
        TrainError::Command(format!(
            "{what}: cannot start `{program}` in {}: {e}",
            workdir.display()
        ))
    })?;
    let pipes = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = pipes
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, pipe)| {
            let (what, tail) = (what.to_string(), tail.clone());
            std::thread::spawn(move || {
                for line in lossy_lines(pipe) {
                    info!(
                        stream = if i == 0 { "stdout" } else { "stderr" },
                        "{what}: {line}"
                    );
                    if let Ok(mut t) = tail.lock() {
                        t.push(line);
                        let excess = t.len().saturating_sub(5);
                        t.drain(..excess);
                    }
                }
            })
        })
        .collect();
    let status = wait(&mut child, cancel, deadline);
    // A grandchild that kept our pipes open would block the readers for ever: the group goes.
    let pid = rustix::process::Pid::from_child(&child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    for r in readers {
        let _ = r.join();
    }
    let status = status?;
    if !status.success() {
        let last = tail.lock().map(|t| t.join(" | ")).unwrap_or_default();
        return Err(TrainError::Command(format!(
            "{what}: `{program}` exited with {status}; last output: {last}"
        )));
    }
    Ok(())
}

/// The lines a trainer writes, read to the end of the pipe whatever bytes they hold: invalid
/// UTF-8 becomes U+FFFD (a binary log or a crashed native library must neither stop the
/// reading, which would leave the trainer blocked on a full pipe, nor the tail).
fn lossy_lines(pipe: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    })
}

/// Wait for the child, checking the cancel flag and the deadline; on either, kill its whole
/// process group.
fn wait(
    child: &mut Child,
    cancel: &CancelFlag,
    deadline: Option<Instant>,
) -> Result<std::process::ExitStatus, TrainError> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(TrainError::Command(format!("waiting for the trainer: {e}"))),
        }
        let late = deadline.is_some_and(|d| Instant::now() >= d);
        if cancel.is_cancelled() || late {
            let pid = rustix::process::Pid::from_child(child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(if late {
                TrainError::Command(format!(
                    "the scoring command did not finish within {PREDICT_TIMEOUT:?}; it was killed"
                ))
            } else {
                TrainError::Cancelled
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a trainer's metrics file may hold.
#[derive(Debug, Deserialize)]
struct MetricsFile {
    #[serde(default)]
    history: Vec<EpochReport>,
    #[serde(flatten)]
    values: BTreeMap<String, serde_json::Value>,
}

impl Trainer for CommandTrainer {
    fn name(&self) -> &'static str {
        "command"
    }

    fn train(
        &self,
        request: &TrainRequest,
        cancel: &CancelFlag,
        progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError> {
        let started = Instant::now();
        let model_dir = request.out_dir.join("model");
        std::fs::create_dir_all(&model_dir).map_err(io_err(&model_dir))?;
        let work = request.out_dir.join("work");
        std::fs::create_dir_all(&work).map_err(io_err(&work))?;
        let format = self.config.scoring.data_format;
        let train_path = work.join(format!("train.{}", format.extension()));
        crate::data::write_table(&request.data, &request.roles, &train_path, format)
            .map_err(|e| TrainError::Command(e.to_string()))?;
        let metrics_path = work.join("metrics.json");
        let vars = [
            ("train_path", train_path.display().to_string()),
            ("model_dir", model_dir.display().to_string()),
            ("metrics_path", metrics_path.display().to_string()),
            ("pipeline", request.pipeline.clone()),
            ("cycle", request.cycle_id.to_string()),
            ("target", request.roles.target.clone()),
        ];
        run(
            &self.config.program,
            &self.config.scoring.env,
            &self.config.scoring.workdir,
            &vars,
            cancel,
            None,
            "train.command",
        )?;
        let text = std::fs::read_to_string(&metrics_path).map_err(|e| {
            TrainError::Command(format!(
                "the trainer exited 0 but wrote no metrics to {{metrics_path}} ({}): {e}",
                metrics_path.display()
            ))
        })?;
        let (numbers, history) = parse_metrics(&text, &metrics_path.display().to_string())?;
        for e in &history {
            progress(e);
        }
        let empty = std::fs::read_dir(&model_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            return Err(TrainError::Command(format!(
                "the trainer exited 0 but wrote nothing into {{model_dir}} ({})",
                model_dir.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&work);
        // The scoring command travels with the model, so it scores the same way later.
        write_spec(&request.out_dir, &self.config.scoring, &request.roles, None)?;
        Ok(external_output(request, started, numbers, history, None))
    }
}

/// Parse a trainer's metrics JSON: an object of finite numbers, with an optional `history`
/// array of per-epoch objects. `origin` names the file in errors.
pub fn parse_metrics(
    text: &str,
    origin: &str,
) -> Result<(BTreeMap<String, f64>, Vec<EpochReport>), TrainError> {
    let metrics: MetricsFile = serde_json::from_str(text).map_err(|e| {
        TrainError::Command(format!("{origin} is not a JSON object of numbers: {e}"))
    })?;
    let mut numbers = BTreeMap::new();
    for (k, v) in &metrics.values {
        let n = v.as_f64().filter(|n| n.is_finite()).ok_or_else(|| {
            TrainError::Command(format!("{origin}: `{k}` is {v}, not a finite number"))
        })?;
        numbers.insert(k.clone(), n);
    }
    Ok((numbers, metrics.history))
}

/// What a trainer outside retraind produced, from its metrics file.
pub fn external_output(
    request: &TrainRequest,
    started: Instant,
    metrics: BTreeMap<String, f64>,
    history: Vec<EpochReport>,
    remote_run: Option<String>,
) -> TrainOutput {
    TrainOutput {
        format: FORMAT.to_string(),
        epochs_run: history.len(),
        best_epoch: history.len(),
        valid_accuracy: metrics.get("valid_accuracy").copied(),
        valid_loss: metrics.get("valid_loss").copied().unwrap_or(f64::NAN),
        train_rows: request.data.rows,
        valid_rows: 0,
        duration_seconds: started.elapsed().as_secs_f64(),
        history,
        extra_metrics: metrics,
        remote_run,
    }
}

/// Write `command.json` beside a model: how to score it later, whatever the config says then.
pub fn write_spec(
    out_dir: &Path,
    scoring: &Scoring,
    roles: &Roles,
    model_uri: Option<&str>,
) -> Result<(), TrainError> {
    let spec = serde_json::json!({
        "scoring": scoring,
        "roles": roles,
        "model_uri": model_uri,
    });
    let path = out_dir.join("command.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(|source| TrainError::Io { path, source })
}

/// A command-trained model: scored by running its predict command.
#[derive(Debug, Clone)]
pub struct CommandModel {
    dir: PathBuf,
    scoring: Scoring,
    roles: Roles,
    /// Where a remotely trained model lives (`{model_uri}`), if not in `dir/model`.
    model_uri: Option<String>,
}

impl CommandModel {
    pub fn load(dir: &Path) -> Result<CommandModel, TrainError> {
        let path = dir.join("command.json");
        let err = |message: String| TrainError::Load {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let field = |k: &str| v[k].clone();
        Ok(CommandModel {
            dir: dir.to_path_buf(),
            scoring: serde_json::from_value(field("scoring")).map_err(|e| err(e.to_string()))?,
            roles: serde_json::from_value(field("roles")).map_err(|e| err(e.to_string()))?,
            model_uri: field("model_uri").as_str().map(str::to_string),
        })
    }
}

impl Predictor for CommandModel {
    fn predict_scored(&self, table: &Table) -> Result<Predictions, TrainError> {
        let work = tempfile::tempdir().map_err(|e| TrainError::Command(e.to_string()))?;
        let format = self.scoring.data_format;
        let input = work.path().join(format!("input.{}", format.extension()));
        let output = work.path().join("predictions.csv");
        crate::data::write_table(table, &self.roles, &input, format)
            .map_err(|e| TrainError::Command(e.to_string()))?;
        let model_dir = self.dir.join("model").display().to_string();
        let vars = [
            (
                "model_uri",
                self.model_uri.clone().unwrap_or_else(|| model_dir.clone()),
            ),
            ("model_dir", model_dir),
            ("input_path", input.display().to_string()),
            ("output_path", output.display().to_string()),
            ("target", self.roles.target.clone()),
        ];
        run(
            &self.scoring.predict,
            &self.scoring.env,
            &self.scoring.workdir,
            &vars,
            &CancelFlag::default(),
            Some(Instant::now() + PREDICT_TIMEOUT),
            "train.command.predict",
        )?;
        read_predictions(&output, table.rows)
    }
}

/// Parse the predict command's CSV: `prediction` and optional `p_<class>` columns.
fn read_predictions(path: &Path, rows: usize) -> Result<Predictions, TrainError> {
    let bad = |m: String| TrainError::Command(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("not written: {e}")))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("empty".into()))?
        .split(',')
        .map(str::trim)
        .collect();
    let at = header
        .iter()
        .position(|h| *h == "prediction")
        .ok_or_else(|| bad("no `prediction` column".into()))?;
    let probs: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix("p_").map(|c| (i, c.to_string())))
        .collect();
    let mut labels = Vec::with_capacity(rows);
    let mut probabilities = Vec::with_capacity(rows * probs.len());
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let cell = |i: usize| {
            cells
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("row {} has {} cells", n + 1, cells.len())))
        };
        labels.push(cell(at)?.to_string());
        for (i, _) in &probs {
            let p = cell(*i)?.parse::<f64>().map_err(|_| {
                bad(format!(
                    "row {}: `{}` is not a probability",
                    n + 1,
                    cells[*i]
                ))
            })?;
            probabilities.push(p);
        }
    }
    if labels.len() != rows {
        return Err(bad(format!(
            "{} predictions for {rows} input rows",
            labels.len()
        )));
    }
    let classes = probs.into_iter().map(|(_, c)| c).collect();
    Ok(Predictions {
        classes,
        labels,
        probabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::lossy_lines;

    #[test]
    fn output_is_read_to_the_end_past_invalid_utf8_and_nul() {
        let bytes: &[u8] = b"epoch 1\n\xff\xfe binary \x00 log\r\nlast line without newline";
        let lines: Vec<String> = lossy_lines(bytes).collect();
        assert_eq!(
            lines,
            [
                "epoch 1",
                "\u{fffd}\u{fffd} binary \0 log",
                "last line without newline"
            ]
        );
    }
}
