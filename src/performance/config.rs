//! `[pipeline.performance]`: where the daily check gets the champion's live metric from, the
//! degradation rule and its defaults (stated here once), and their validation; also how a
//! metric named anywhere in a pipeline is checked against the pipeline's task.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Metric, Rule, Task};
use crate::validate::Checker;

/// `[pipeline.performance]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawPerformance {
    pub source: Option<String>,
    pub metric: Option<String>,
    pub relative_threshold: Option<f64>,
    pub alpha: Option<f64>,
    pub min_labels: Option<i64>,
    pub positive_class: Option<String>,
    pub baseline: Option<f64>,
    pub bootstrap_resamples: Option<i64>,
    pub prometheus_url: Option<String>,
    pub query: Option<String>,
    pub query_timeout: Option<String>,
    pub estimate_when_unlabelled: Option<bool>,
}

/// Where the performance check gets predictions or values from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceSource {
    /// Score the labelled current rows with the champion model.
    Model,
    /// Compare the `data.prediction` column (what the serving system predicted) with labels.
    PredictionColumn,
    /// An instant PromQL query (e.g. a serving system's accuracy gauge).
    Prometheus,
    /// Estimate the champion's metric without labels (CBPE): the champion scores the whole
    /// window and its probabilities, calibrated on its holdout, give the estimate and band.
    /// Where the window has `min_labels` labelled rows the realised value is reported beside.
    Estimated,
}

/// An instant PromQL query for the live metric.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusQuery {
    pub url: String,
    pub query: String,
    pub timeout: Duration,
}

/// The daily check's performance settings.
#[derive(Debug, Clone)]
pub struct PerformanceConfig {
    pub source: PerformanceSource,
    pub rule: Rule,
    pub positive_class: Option<String>,
    /// A fixed baseline instead of the champion's stored evaluation.
    pub baseline: Option<f64>,
    pub prometheus: Option<PrometheusQuery>,
    /// With `source = "model"` or `"prediction_column"`: estimate (as `"estimated"` does)
    /// while the window has fewer than `min_labels` labelled rows, instead of reporting
    /// `insufficient_labels`.
    pub estimate_when_unlabelled: bool,
}

impl Rule {
    /// The degradation rule's defaults for `metric`.
    pub fn defaults(metric: Metric) -> Rule {
        Rule {
            metric,
            relative_threshold: 0.95,
            alpha: 0.05,
            min_labels: 100,
            bootstrap_resamples: 1000,
        }
    }
}

/// The longest a PromQL query may take by default.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

impl PerformanceConfig {
    /// The settings a pipeline of `task` gets when it writes none.
    pub fn defaults(task: Task) -> PerformanceConfig {
        PerformanceConfig {
            source: PerformanceSource::Model,
            rule: Rule::defaults(task.default_metric()),
            positive_class: None,
            baseline: None,
            prometheus: None,
            estimate_when_unlabelled: false,
        }
    }

    /// Whether this check estimates the metric for a window with `labelled` labelled rows.
    pub fn estimates(&self, labelled: usize) -> bool {
        self.source == PerformanceSource::Estimated
            || (self.estimate_when_unlabelled && labelled < self.rule.min_labels)
    }

    /// Validate `raw` (the checker is at `pipeline[i].performance`). `has_prediction`: the
    /// pipeline names a `data.prediction` column.
    pub fn from_raw(
        raw: RawPerformance,
        task: Task,
        has_prediction: bool,
        c: &mut Checker,
    ) -> PerformanceConfig {
        let d = PerformanceConfig::defaults(task);
        let source = c.choice(
            "source",
            raw.source.as_deref(),
            d.source,
            |w| match w {
                "model" => Some(PerformanceSource::Model),
                "prediction_column" => Some(PerformanceSource::PredictionColumn),
                "prometheus" => Some(PerformanceSource::Prometheus),
                "estimated" => Some(PerformanceSource::Estimated),
                _ => None,
            },
            |w| format!("`{w}` is not a source; use \"model\" (score the champion, default), \"prediction_column\", \"prometheus\" or \"estimated\""),
        );
        // The served predictions (a column, a PromQL value) may be judged by any metric;
        // scoring the champion gives what its task's models give.
        let metric = metric_for(c, "metric", &raw.metric, task, true);
        check_source(c, &raw, source, metric, task, has_prediction);
        let estimate_when_unlabelled = raw.estimate_when_unlabelled.unwrap_or(false);
        check_estimate(c, source, estimate_when_unlabelled, metric, task);
        let prometheus = prometheus_query(c, &raw, source);
        let baseline = raw
            .baseline
            .map(|b| c.positive_number("baseline", Some(b), 1.0));
        let r = d.rule;
        PerformanceConfig {
            source,
            rule: Rule {
                metric,
                relative_threshold: c.fraction(
                    "relative_threshold",
                    raw.relative_threshold,
                    r.relative_threshold,
                    true,
                ),
                alpha: c.fraction("alpha", raw.alpha, r.alpha, true),
                min_labels: c.positive(
                    "min_labels",
                    raw.min_labels,
                    r.min_labels,
                    i64::from(u32::MAX),
                ),
                bootstrap_resamples: c.positive(
                    "bootstrap_resamples",
                    raw.bootstrap_resamples,
                    r.bootstrap_resamples,
                    100_000,
                ),
            },
            positive_class: raw.positive_class,
            baseline,
            prometheus,
            estimate_when_unlabelled,
        }
    }
}

/// An estimate needs a classifier, a metric CBPE estimates, and labels to fall back from.
fn check_estimate(
    c: &mut Checker,
    source: PerformanceSource,
    when_unlabelled: bool,
    metric: Metric,
    task: Task,
) {
    let key = match (source, when_unlabelled) {
        (PerformanceSource::Estimated, _) => "source",
        (PerformanceSource::Prometheus, true) => {
            c.problem(
                "estimate_when_unlabelled",
                "a live metric from Prometheus needs no labels; remove estimate_when_unlabelled or use source = \"model\"",
            );
            return;
        }
        (_, true) => "estimate_when_unlabelled",
        (_, false) => return,
    };
    if task != Task::Classification {
        c.problem(
            key,
            "performance is estimated for classifiers only (CBPE); a regressor's check needs labels",
        );
    } else if !metric.estimable() {
        let names: Vec<&str> = Metric::ALL
            .into_iter()
            .filter(|m| m.estimable())
            .map(Metric::name)
            .collect();
        c.problem(
            "metric",
            format!(
                "{} cannot be estimated without labels; with an estimate use {}",
                metric.name(),
                names.join(", ")
            ),
        );
    }
}

/// The combinations of source and metric that cannot be judged.
fn check_source(
    c: &mut Checker,
    raw: &RawPerformance,
    source: PerformanceSource,
    metric: Metric,
    task: Task,
    has_prediction: bool,
) {
    if !task.fits(metric) && source == PerformanceSource::Model {
        c.problem("metric", format!("{} does not fit task = \"{}\" with source = \"model\"; set the pipeline's task, pick a {} metric, or use source = \"prediction_column\" or \"prometheus\"", metric.name(), task.name(), task.name()));
    }
    if metric == Metric::RocAuc && source == PerformanceSource::PredictionColumn {
        c.problem("metric", "roc_auc needs scores; use source = \"model\"");
    }
    if source == PerformanceSource::PredictionColumn && !has_prediction {
        c.problem(
            "source",
            "prediction_column needs data.prediction, the column with the served predictions",
        );
    }
    if source == PerformanceSource::Prometheus && raw.baseline.is_none() && !task.fits(metric) {
        c.problem(
            "baseline",
            format!(
                "a live {} needs a fixed baseline: a {} champion stores only {} metrics",
                metric.name(),
                task.name(),
                task.name()
            ),
        );
    }
}

/// The PromQL query of `source = "prometheus"`.
fn prometheus_query(
    c: &mut Checker,
    raw: &RawPerformance,
    source: PerformanceSource,
) -> Option<PrometheusQuery> {
    if source != PerformanceSource::Prometheus {
        return None;
    }
    let (Some(url), Some(query)) = (&raw.prometheus_url, &raw.query) else {
        c.problem("", "source = \"prometheus\" needs prometheus_url and query");
        return None;
    };
    c.url("prometheus_url", url, "");
    Some(PrometheusQuery {
        url: url.clone(),
        query: query.clone(),
        timeout: c.duration("query_timeout", &raw.query_timeout, QUERY_TIMEOUT),
    })
}

/// A metric named in a pipeline (`key` relative to the checker): absent, the task's default;
/// one of the other task's family is refused unless `any_family` (a served prediction or a
/// live value may be judged by any metric).
pub fn metric_for(
    c: &mut Checker,
    key: &str,
    raw: &Option<String>,
    task: Task,
    any_family: bool,
) -> Metric {
    match raw.as_deref().map(str::parse::<Metric>) {
        None => task.default_metric(),
        Some(Ok(m)) if task.fits(m) || any_family => m,
        Some(Ok(m)) => {
            let fitting: Vec<&str> = Metric::ALL
                .into_iter()
                .filter(|m| task.fits(*m))
                .map(Metric::name)
                .collect();
            c.problem(
                key,
                format!(
                    "{} is not a {} metric; task = \"{}\" (set at the pipeline's top) takes {}",
                    m.name(),
                    task.name(),
                    task.name(),
                    fitting.join(", ")
                ),
            );
            task.default_metric()
        }
        Some(Err(e)) => {
            c.problem(key, e);
            task.default_metric()
        }
    }
}
