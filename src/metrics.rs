//! Prometheus metrics: one registry owned by the daemon, typed handles for every metric, and
//! the text exposition served at `/metrics`. Labels stay low-cardinality: `pipeline`,
//! `state`, `outcome`, `split`, `version` — never a cycle id or a file name.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::cycle::{CycleState, Outcome};

/// Every metric the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub cycles_total: IntCounterVec,
    pub cycle_duration: HistogramVec,
    pub cycle_state: IntGaugeVec,
    pub cycle_state_entered: GaugeVec,
    pub last_successful_check: GaugeVec,
    pub next_scheduled_check: GaugeVec,
    pub training_epoch: IntGaugeVec,
    pub training_loss: GaugeVec,
    pub drifted_features: IntGaugeVec,
    pub feature_drift_score: GaugeVec,
    pub feature_drift_p_value: GaugeVec,
    pub dataset_drift_share: GaugeVec,
    pub drift_detected: IntGaugeVec,
    pub data_quality_failures: IntCounterVec,
    pub model_metric: GaugeVec,
    pub model_metric_band: GaugeVec,
    pub estimate_error: GaugeVec,
    pub multivariate_drift: GaugeVec,
    pub degradation_detected: IntGaugeVec,
    pub approvals_pending: IntGaugeVec,
    pub approval_decisions: IntCounterVec,
    pub deploys_total: IntCounterVec,
    pub rollbacks_total: IntCounterVec,
    pub pipeline_frozen: IntGaugeVec,
    pub champion_version: IntGaugeVec,
    pub guard_blocks: IntCounterVec,
    pub training_failures: IntCounterVec,
    pub leader: IntGaugeVec,
    pub training_duration: GaugeVec,
    pub disk_bytes: IntGaugeVec,
}

/// Approval channels, the `channel` label of `retraind_approval_decisions_total`.
pub const CHANNELS: [&str; 6] = ["api", "cli", "slack", "webhook", "console", "config"];
/// Why a rollback happened, the `reason` label of `retraind_rollbacks_total`.
pub const ROLLBACK_REASONS: [&str; 2] = ["manual", "watch"];

/// A metric's name, help and labels.
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const BUILD_INFO: Def = Def {
    name: "retraind_build_info",
    help: "Build information; the value is always 1.",
    labels: &["version"],
};
const CYCLE_DURATION: Def = Def {
    name: "retraind_cycle_duration_seconds",
    help: "Wall time of finished cycles, from trigger to terminal state.",
    labels: &["pipeline"],
};
const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0,
];
const CYCLES_TOTAL: Def = Def {
    name: "retraind_cycles_total",
    help: "Finished cycles by outcome.",
    labels: &["pipeline", "outcome"],
};
const CYCLE_STATE: Def = Def {
    name: "retraind_cycle_state",
    help: "1 for the state the pipeline's current cycle is in.",
    labels: &["pipeline", "state"],
};
const CYCLE_STATE_ENTERED: Def = Def {
    name: "retraind_cycle_state_entered_timestamp_seconds",
    help: "Unix time the pipeline's current cycle entered its state (or the last cycle its terminal state).",
    labels: &["pipeline"],
};
const LAST_SUCCESSFUL_CHECK: Def = Def {
    name: "retraind_last_successful_check_timestamp_seconds",
    help: "Unix time of the last completed drift/performance check.",
    labels: &["pipeline"],
};
const NEXT_SCHEDULED_CHECK: Def = Def {
    name: "retraind_next_scheduled_check_timestamp_seconds",
    help: "Unix time the schedule fires next.",
    labels: &["pipeline"],
};
const TRAINING_EPOCH: Def = Def {
    name: "retraind_training_epoch",
    help: "Last finished epoch of the running or last training.",
    labels: &["pipeline"],
};
const TRAINING_LOSS: Def = Def {
    name: "retraind_training_loss",
    help: "Loss of the last finished epoch.",
    labels: &["pipeline", "split"],
};
const DRIFTED_FEATURES: Def = Def {
    name: "retraind_drifted_features",
    help: "Features found drifted by the last check.",
    labels: &["pipeline"],
};
const FEATURE_DRIFT_SCORE: Def = Def {
    name: "retraind_feature_drift_score",
    help: "Drift of a feature at the last check: the effect size of a test, or the distance.",
    labels: &["pipeline", "feature", "method"],
};
const FEATURE_DRIFT_P_VALUE: Def = Def {
    name: "retraind_feature_drift_p_value",
    help: "Corrected p-value of a feature's drift test at the last check.",
    labels: &["pipeline", "feature"],
};
const DATASET_DRIFT_SHARE: Def = Def {
    name: "retraind_dataset_drift_share",
    help: "Share of features drifted at the last check.",
    labels: &["pipeline"],
};
const DRIFT_DETECTED: Def = Def {
    name: "retraind_drift_detected",
    help: "1 if the last check found dataset drift.",
    labels: &["pipeline"],
};
const DATA_QUALITY_FAILURES: Def = Def {
    name: "retraind_data_quality_failures_total",
    help: "Failed data quality checks, by check.",
    labels: &["pipeline", "check"],
};
const MODEL_METRIC: Def = Def {
    name: "retraind_model_metric",
    help: "A model's latest metric: alias champion = on the last checked window (or live), candidate = on the gate's holdout; source = realised (labels), estimated (CBPE, no labels) or live (PromQL).",
    labels: &["pipeline", "alias", "metric", "source"],
};
const MODEL_METRIC_BAND: Def = Def {
    name: "retraind_model_metric_band",
    help: "The band (±3 standard errors) of the champion's estimated metric at the last check: bound = lower or upper.",
    labels: &["pipeline", "alias", "metric", "bound"],
};
const ESTIMATE_ERROR: Def = Def {
    name: "retraind_estimate_error",
    help: "Estimated minus realised value of the champion's metric, for the last check whose window had both.",
    labels: &["pipeline", "metric"],
};
const MULTIVARIATE_DRIFT: Def = Def {
    name: "retraind_multivariate_drift",
    help: "Data reconstruction error at the last check: value = the worst chunk's, upper_threshold / lower_threshold = the reference chunks' mean ± 3σ.",
    labels: &["pipeline", "kind"],
};
const DEGRADATION_DETECTED: Def = Def {
    name: "retraind_degradation_detected",
    help: "1 if the last check found the champion degraded, 0 if healthy, -1 if unknown or too few labels.",
    labels: &["pipeline"],
};
const APPROVALS_PENDING: Def = Def {
    name: "retraind_approvals_pending",
    help: "Candidates waiting for a human decision.",
    labels: &["pipeline"],
};
const APPROVAL_DECISIONS: Def = Def {
    name: "retraind_approval_decisions_total",
    help: "Recorded approval decisions, by decision and channel.",
    labels: &["pipeline", "decision", "channel"],
};
const DEPLOYS_TOTAL: Def = Def {
    name: "retraind_deploys_total",
    help: "Versions deployed (the champion alias moved forward).",
    labels: &["pipeline"],
};
const ROLLBACKS_TOTAL: Def = Def {
    name: "retraind_rollbacks_total",
    help: "Rollbacks to an earlier version, by reason (manual, watch).",
    labels: &["pipeline", "reason"],
};
const PIPELINE_FROZEN: Def = Def {
    name: "retraind_pipeline_frozen",
    help: "1 while the pipeline's automation is frozen or paused by the circuit breaker.",
    labels: &["pipeline"],
};
const CHAMPION_VERSION: Def = Def {
    name: "retraind_champion_version",
    help: "Version number the champion alias points at (0 = none).",
    labels: &["pipeline"],
};
const GUARD_BLOCKS: Def = Def {
    name: "retraind_guard_blocks_total",
    help: "Actions a runaway guard blocked, by guard.",
    labels: &["pipeline", "guard"],
};
const TRAINING_DURATION: Def = Def {
    name: "retraind_training_duration_seconds",
    help: "Wall time of the pipeline's last finished training.",
    labels: &["pipeline"],
};
const LEADER: Def = Def {
    name: "retraind_leader",
    help: "1 while this daemon holds the leader lease and runs cycles; 0 on a standby.",
    labels: &["instance"],
};
const DISK_BYTES: Def = Def {
    name: "retraind_disk_bytes",
    help: "Bytes under the state directory by kind (models, inputs, reports, staging), as the last retention run measured them.",
    labels: &["kind"],
};
const TRAINING_FAILURES: Def = Def {
    name: "retraind_training_failures_total",
    help: "Trainings that failed (error, timeout, failed-to-learn guard).",
    labels: &["pipeline"],
};

fn opts(d: &Def) -> Opts {
    Opts::new(d.name, d.help)
}

fn counter(registry: &Registry, d: &Def) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(opts(d), d.labels).expect("static metric definition"),
    )
}

fn float_gauge(registry: &Registry, d: &Def) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(opts(d), d.labels).expect("static metric definition"),
    )
}

fn gauge(registry: &Registry, d: &Def) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(opts(d), d.labels).expect("static metric definition"),
    )
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are static and unique in this module; a clash is a programming error caught by
    // the unit test below, so ignoring the result here cannot hide a runtime condition.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build = gauge(&registry, &BUILD_INFO);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            cycle_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(CYCLE_DURATION.name, CYCLE_DURATION.help)
                        .buckets(DURATION_BUCKETS.to_vec()),
                    CYCLE_DURATION.labels,
                )
                .expect("static metric definition"),
            ),
            cycles_total: counter(&registry, &CYCLES_TOTAL),
            cycle_state: gauge(&registry, &CYCLE_STATE),
            cycle_state_entered: float_gauge(&registry, &CYCLE_STATE_ENTERED),
            last_successful_check: float_gauge(&registry, &LAST_SUCCESSFUL_CHECK),
            next_scheduled_check: float_gauge(&registry, &NEXT_SCHEDULED_CHECK),
            training_epoch: gauge(&registry, &TRAINING_EPOCH),
            training_loss: float_gauge(&registry, &TRAINING_LOSS),
            drifted_features: gauge(&registry, &DRIFTED_FEATURES),
            feature_drift_score: float_gauge(&registry, &FEATURE_DRIFT_SCORE),
            feature_drift_p_value: float_gauge(&registry, &FEATURE_DRIFT_P_VALUE),
            dataset_drift_share: float_gauge(&registry, &DATASET_DRIFT_SHARE),
            drift_detected: gauge(&registry, &DRIFT_DETECTED),
            data_quality_failures: counter(&registry, &DATA_QUALITY_FAILURES),
            model_metric: float_gauge(&registry, &MODEL_METRIC),
            model_metric_band: float_gauge(&registry, &MODEL_METRIC_BAND),
            estimate_error: float_gauge(&registry, &ESTIMATE_ERROR),
            multivariate_drift: float_gauge(&registry, &MULTIVARIATE_DRIFT),
            degradation_detected: gauge(&registry, &DEGRADATION_DETECTED),
            approvals_pending: gauge(&registry, &APPROVALS_PENDING),
            approval_decisions: counter(&registry, &APPROVAL_DECISIONS),
            deploys_total: counter(&registry, &DEPLOYS_TOTAL),
            rollbacks_total: counter(&registry, &ROLLBACKS_TOTAL),
            pipeline_frozen: gauge(&registry, &PIPELINE_FROZEN),
            champion_version: gauge(&registry, &CHAMPION_VERSION),
            guard_blocks: counter(&registry, &GUARD_BLOCKS),
            training_duration: float_gauge(&registry, &TRAINING_DURATION),
            leader: gauge(&registry, &LEADER),
            disk_bytes: gauge(&registry, &DISK_BYTES),
            training_failures: counter(&registry, &TRAINING_FAILURES),
            registry,
        }
    }

    /// Export a check's performance finding.
    pub fn record_performance(&self, pipeline: &str, a: &crate::performance::Assessment) {
        use crate::performance::{Status, Test};
        let metric = a.metric.name();
        let source = match (&a.estimated, a.test) {
            (Some(_), _) => "estimated",
            (None, Test::None) => "live",
            _ => "realised",
        };
        if let Some(v) = a.current {
            self.model_metric
                .with_label_values(&[pipeline, "champion", metric, source])
                .set(v);
        }
        if let Some(e) = &a.estimated {
            for (bound, v) in [("lower", e.lower), ("upper", e.upper)] {
                self.model_metric_band
                    .with_label_values(&[pipeline, "champion", metric, bound])
                    .set(v);
            }
            if let Some(r) = e.realised {
                self.model_metric
                    .with_label_values(&[pipeline, "champion", metric, "realised"])
                    .set(r);
            }
            if let Some(err) = a.current.and_then(|v| e.error(v)) {
                self.estimate_error
                    .with_label_values(&[pipeline, metric])
                    .set(err);
            }
        }
        let flag = match a.status {
            Status::Degraded => 1,
            Status::Healthy => 0,
            Status::InsufficientLabels | Status::Unknown => -1,
        };
        self.degradation_detected
            .with_label_values(&[pipeline])
            .set(flag);
    }

    /// Remove the per-feature drift series of `pipeline` whose feature is not in `keep`.
    fn forget_features(&self, pipeline: &str, keep: &[&str]) {
        use prometheus::core::Collector;
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_string())
        };
        for family in self
            .feature_drift_score
            .collect()
            .iter()
            .chain(self.feature_drift_p_value.collect().iter())
        {
            for m in family.get_metric() {
                let (Some(p), Some(f)) = (label(m, "pipeline"), label(m, "feature")) else {
                    continue;
                };
                if p != pipeline || keep.contains(&f.as_str()) {
                    continue;
                }
                let _ = self.feature_drift_p_value.remove_label_values(&[&p, &f]);
                for old in crate::drift::Method::ALL {
                    let _ = self
                        .feature_drift_score
                        .remove_label_values(&[&p, &f, old.as_str()]);
                }
            }
        }
    }

    /// Export a check's drift report. Series of features the report no longer has (they
    /// left the config or the data) are removed, so a dashboard never shows a stale value.
    pub fn record_drift(&self, pipeline: &str, report: &crate::drift::DriftReport) {
        let current: Vec<&str> = report.features.iter().map(|f| f.name.as_str()).collect();
        self.forget_features(pipeline, &current);
        for f in &report.features {
            let (method, score) = f.score();
            // A feature's method can change with the config: drop its old series.
            for old in crate::drift::Method::ALL {
                let _ = self.feature_drift_score.remove_label_values(&[
                    pipeline,
                    f.name.as_str(),
                    old.as_str(),
                ]);
            }
            self.feature_drift_score
                .with_label_values(&[pipeline, f.name.as_str(), method.as_str()])
                .set(score);
            if let Some(p) = f.p_adjusted {
                self.feature_drift_p_value
                    .with_label_values(&[pipeline, f.name.as_str()])
                    .set(p);
            }
        }
        self.dataset_drift_share
            .with_label_values(&[pipeline])
            .set(report.dataset.drifted_share);
        self.drift_detected
            .with_label_values(&[pipeline])
            .set(i64::from(report.dataset.drifted));
        if let Some(crate::drift::Multivariate::Measured(m)) = &report.multivariate {
            for (kind, v) in [
                ("value", m.worst().map(|c| c.value)),
                ("upper_threshold", m.upper_threshold),
                ("lower_threshold", m.lower_threshold),
            ] {
                match v.filter(|v| v.is_finite()) {
                    Some(v) => self
                        .multivariate_drift
                        .with_label_values(&[pipeline, kind])
                        .set(v),
                    None => {
                        let _ = self
                            .multivariate_drift
                            .remove_label_values(&[pipeline, kind]);
                    }
                }
            }
        }
    }

    /// Make every series of a pipeline exist from the start (zero-valued), so dashboards and
    /// alerts see the pipeline before its first cycle.
    pub fn init_pipeline(&self, pipeline: &str) {
        for o in Outcome::ALL {
            self.cycles_total.with_label_values(&[pipeline, o.as_str()]);
        }
        for s in CycleState::ALL {
            self.cycle_state
                .with_label_values(&[pipeline, s.as_str()])
                .set(0);
        }
        self.cycle_state_entered
            .with_label_values(&[pipeline])
            .set(chrono::Utc::now().timestamp() as f64);
        // Unknown until the first performance check.
        self.degradation_detected
            .with_label_values(&[pipeline])
            .set(-1);
        // Counters exist at zero from the start, so rate() and dashboards see them before
        // the first failure.
        for c in crate::quality::Check::ALL {
            self.data_quality_failures
                .with_label_values(&[pipeline, c.as_str()]);
        }
        self.approvals_pending.with_label_values(&[pipeline]).set(0);
        for d in [
            crate::approval::ApprovalDecision::Approve,
            crate::approval::ApprovalDecision::Reject,
        ] {
            for ch in CHANNELS {
                self.approval_decisions
                    .with_label_values(&[pipeline, d.as_str(), ch]);
            }
        }
        self.deploys_total.with_label_values(&[pipeline]);
        for r in ROLLBACK_REASONS {
            self.rollbacks_total.with_label_values(&[pipeline, r]);
        }
        for g in crate::guards::Guard::ALL {
            self.guard_blocks.with_label_values(&[pipeline, g.as_str()]);
        }
        self.training_failures.with_label_values(&[pipeline]);
        self.training_duration
            .with_label_values(&[pipeline])
            .set(0.0);
        self.pipeline_frozen.with_label_values(&[pipeline]).set(0);
        self.champion_version.with_label_values(&[pipeline]).set(0);
    }

    /// The `channel` label for a decision's channel name (unknown names count as `api`).
    pub fn channel_label(channel: &str) -> &'static str {
        CHANNELS
            .into_iter()
            .find(|c| *c == channel)
            .unwrap_or("api")
    }

    /// Record the state a pipeline's cycle is in (1 for it, 0 for the others), entered now.
    pub fn set_state(&self, pipeline: &str, state: CycleState) {
        self.set_state_since(pipeline, state, chrono::Utc::now());
    }

    /// Record the state a pipeline's cycle is in and when it entered it.
    pub fn set_state_since(
        &self,
        pipeline: &str,
        state: CycleState,
        since: chrono::DateTime<chrono::Utc>,
    ) {
        self.cycle_state_entered
            .with_label_values(&[pipeline])
            .set(since.timestamp_millis() as f64 / 1000.0);
        for s in CycleState::ALL {
            self.cycle_state
                .with_label_values(&[pipeline, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Count a finished cycle.
    pub fn finished(&self, pipeline: &str, outcome: Outcome, seconds: f64) {
        self.cycles_total
            .with_label_values(&[pipeline, outcome.as_str()])
            .inc();
        self.cycle_duration
            .with_label_values(&[pipeline])
            .observe(seconds.max(0.0));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feature that left the config leaves `/metrics` at the next check; other features
    /// and other pipelines keep their series.
    #[test]
    fn series_of_features_that_left_are_removed() {
        let m = Metrics::new();
        for (p, f) in [("p", "a"), ("p", "gone"), ("q", "gone")] {
            m.feature_drift_score
                .with_label_values(&[p, f, "ks"])
                .set(0.5);
            m.feature_drift_p_value.with_label_values(&[p, f]).set(0.01);
        }
        m.forget_features("p", &["a"]);
        let text = m.render();
        for kept in [
            "retraind_feature_drift_score{feature=\"a\",method=\"ks\",pipeline=\"p\"} 0.5",
            "retraind_feature_drift_p_value{feature=\"a\",pipeline=\"p\"} 0.01",
            "retraind_feature_drift_score{feature=\"gone\",method=\"ks\",pipeline=\"q\"} 0.5",
            "retraind_feature_drift_p_value{feature=\"gone\",pipeline=\"q\"} 0.01",
        ] {
            assert!(text.contains(kept), "missing {kept} in\n{text}");
        }
        assert!(
            !text.contains("feature=\"gone\",method=\"ks\",pipeline=\"p\""),
            "{text}"
        );
        assert!(!text.contains("feature=\"gone\",pipeline=\"p\""), "{text}");
    }

    #[test]
    fn exposes_the_first_set() {
        let m = Metrics::new();
        m.init_pipeline("p");
        m.set_state("p", CycleState::Training);
        m.finished("p", Outcome::Deployed, 12.0);
        m.next_scheduled_check.with_label_values(&["p"]).set(1.0);
        m.last_successful_check.with_label_values(&["p"]).set(1.0);
        let text = m.render();
        for want in [
            "retraind_build_info{version=",
            "retraind_cycles_total{outcome=\"deployed\",pipeline=\"p\"} 1",
            "retraind_cycle_duration_seconds_bucket",
            "retraind_cycle_state{pipeline=\"p\",state=\"training\"} 1",
            "retraind_cycle_state{pipeline=\"p\",state=\"loading\"} 0",
            "retraind_last_successful_check_timestamp_seconds{pipeline=\"p\"} 1",
            "retraind_next_scheduled_check_timestamp_seconds{pipeline=\"p\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
