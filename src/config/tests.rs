//! The configuration as a whole: every problem reported with its key path, environment
//! overrides, and the defaults each task gets.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir();
    Config::parse(text, &dir.join("t.toml"), &[])
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a\n1\n").unwrap();
    let text = r#"
        [[pipeline]]
        name = "p"
        schedule = "every day at noon"
        colour = "blue"
        [pipeline.data]
        reference = "ref.csv"
        current = "{date}.csv"
        [pipeline.drift]
        alpha = -0.5
    "#;
    let got = Config::parse(text, &dir.path().join("c.toml"), &[]).unwrap_err();
    let ConfigError::Invalid { problems, .. } = got else {
        panic!("{got}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"pipeline[0].schedule"), "{paths:?}");
    assert!(paths.contains(&"pipeline[0].colour"), "{paths:?}");
    assert!(paths.contains(&"pipeline[0].drift.alpha"), "{paths:?}");
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn wrong_type_names_the_path() {
    let p = problems("[server]\nlisten = 5\n[[pipeline]]\nname='x'\n");
    assert_eq!(p[0].path, "server.listen");
}

#[test]
fn env_overrides_apply_and_unknown_sections_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a\n1\n").unwrap();
    let text =
        "[[pipeline]]\nname='p'\n[pipeline.data]\nreference='ref.csv'\ncurrent='{date}.csv'\n";
    let env = vec![
        (
            "RETRAIND_STORE__URL".to_string(),
            "postgres://u:hunter2@db/x".to_string(),
        ),
        (
            "RETRAIND_SERVER__LISTEN".to_string(),
            "127.0.0.1:1234".to_string(),
        ),
    ];
    let c = Config::parse(text, &dir.path().join("c.toml"), &env).unwrap();
    assert_eq!(c.store.url, "postgres://u:hunter2@db/x");
    assert_eq!(c.store.redacted_url(), "postgres://u:***@db/x");
    assert_eq!(c.server.listen.port(), 1234);
    let env = vec![("RETRAIND_NOPE__X".to_string(), "1".to_string())];
    let err = Config::parse(text, &dir.path().join("c.toml"), &env).unwrap_err();
    assert!(err.to_string().contains("nope.x"), "{err}");
}

#[test]
fn durations_and_ranges_are_checked() {
    let p = problems(
        "[daemon]\nshutdown_grace='soon'\n[[pipeline]]\nname='bad name'\n[pipeline.train.burn]\nepochs=0\n",
    );
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "daemon.shutdown_grace",
        "pipeline[0].name",
        "pipeline[0].train.burn.epochs",
        "pipeline[0].data.reference",
        "pipeline[0].data.current",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
}

#[test]
fn training_settings_are_checked_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0\n").unwrap();
    let text = r#"
[[pipeline]]
name = "p"
[pipeline.data]
reference = "ref.csv"
current = "{date}.csv"
[pipeline.train]
backend = "kfp"
[pipeline.train.burn]
activation = "swish"
derived = [{ name = "x", ratio = ["a"] }, { log1p = "v" }]
filters = [{ column = "v", op = "=>", value = 1 }]
"#;
    let got = match Config::parse(text, &dir.path().join("t.toml"), &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    };
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "pipeline[0].train.kfp",
        "pipeline[0].train.burn.activation",
        "pipeline[0].train.burn.derived[0]",
        "pipeline[0].train.burn.derived[1]",
        "pipeline[0].train.burn.filters[0]",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
}

/// `task` picks the metric family: a regressor is gated on RMSE with relative margins
/// by default; metrics and bounds of the other family are refused by key.
#[test]
fn the_task_sets_metrics_and_their_bounds() {
    use crate::performance::{Metric, Task};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0.5\n").unwrap();
    let base = "[[pipeline]]\nname = \"p\"\ntask = \"regression\"\n[pipeline.data]\nreference = \"ref.csv\"\ncurrent = \"{date}.csv\"\n";
    let c = Config::parse(base, &dir.path().join("t.toml"), &[]).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(p.task, Task::Regression);
    assert_eq!(p.train.burn.task, Task::Regression);
    assert_eq!(p.train.burn.fail_below_r2, Some(0.0));
    assert_eq!(p.gate.metric, Metric::Rmse);
    assert_eq!(p.performance.rule.metric, Metric::Rmse);
    assert_eq!(
        (p.gate.max_drop, p.gate.max_drop_relative, p.gate.min_r2),
        (None, Some(0.01), Some(0.0))
    );
    assert_eq!(
        (p.gate.slice_max_drop, p.gate.slice_max_drop_relative),
        (None, Some(0.10))
    );
    // Absolute margins in the target's units are any number >= 0.
    let units =
        format!("{base}[pipeline.gate]\nmetric = \"mae\"\nmax_error = 12.5\nmax_drop = 3.0\n");
    let c = Config::parse(&units, &dir.path().join("t.toml"), &[]).unwrap();
    let g = &c.pipelines[0].gate;
    assert_eq!(
        (g.metric, g.max_error, g.max_drop, g.max_drop_relative),
        (Metric::Mae, Some(12.5), Some(3.0), None)
    );
    let wrong = format!(
        "{base}[pipeline.gate]\nmetric = \"accuracy\"\nmin_accuracy = 0.9\n[pipeline.performance]\nmetric = \"roc_auc\"\n[pipeline.train.burn]\nfail_below_accuracy = 0.2\n"
    );
    let got = match Config::parse(&wrong, &dir.path().join("t.toml"), &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    };
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"pipeline[0].gate.metric"), "{got:?}");
    assert!(paths.contains(&"pipeline[0].gate.min_accuracy"), "{got:?}");
    assert!(paths.contains(&"pipeline[0].performance.metric"), "{got:?}");
    assert!(
        paths.contains(&"pipeline[0].train.burn.fail_below_accuracy"),
        "{got:?}"
    );
    let unknown = base.replace("\"regression\"", "\"ranking\"");
    match Config::parse(&unknown, &dir.path().join("t.toml"), &[]) {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == "pipeline[0].task" && p.message.contains("\"regression\"")),
                "{problems:?}"
            )
        }
        other => panic!("expected invalid config, got {other:?}"),
    }
    // A classifier keeps accuracy, its 0.9 floor and absolute margins.
    let classifier = base.replace("task = \"regression\"\n", "");
    let c = Config::parse(&classifier, &dir.path().join("t.toml"), &[]).unwrap();
    let g = &c.pipelines[0].gate;
    assert_eq!(
        (
            g.metric,
            g.min_accuracy,
            g.max_drop,
            g.max_drop_relative,
            g.slice_max_drop
        ),
        (Metric::Accuracy, 0.9, Some(0.0), None, Some(0.05))
    );
    // A relative margin alone is not undercut by the absolute default.
    let relative = format!("{classifier}[pipeline.gate]\nmax_drop_relative = 0.02\n");
    let c = Config::parse(&relative, &dir.path().join("t.toml"), &[]).unwrap();
    let g = &c.pipelines[0].gate;
    assert_eq!(
        (g.max_drop, g.max_drop_relative, g.min_r2),
        (None, Some(0.02), None)
    );
    assert_eq!(c.pipelines[0].train.burn.fail_below_r2, None);
}

#[test]
fn guardrail_settings_are_checked_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0\n").unwrap();
    let text = r##"
[slack]
api_url = "ftp://slack"
[webhook]
url = "https://hooks.example.com"
[[pipeline]]
name = "p"
[pipeline.data]
reference = "ref.csv"
current = "{date}.csv"
categorical = ["segment"]
[pipeline.gate]
slices = ["region"]
max_drop_relative = 1.5
[pipeline.approval]
slack_channel = "#x"
[pipeline.deploy]
watch = "1h"
watch_for = "2h"
on_failure = "panic"
hook_url = "hook.example.com"
watch_interval = "0s"
[pipeline.guards]
max_retrains = ["1/24h", "lots"]
cooldown = "forever"
"##;
    let got = match Config::parse(text, &dir.path().join("t.toml"), &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    };
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "slack",
        "slack.api_url",
        "webhook.secret_file",
        "pipeline[0].gate.slices",
        "pipeline[0].gate.max_drop_relative",
        "pipeline[0].deploy.watch",
        "pipeline[0].deploy.on_failure",
        "pipeline[0].deploy.hook_url",
        "pipeline[0].deploy.watch_interval",
        "pipeline[0].guards.max_retrains",
        "pipeline[0].guards.cooldown",
    ] {
        assert!(paths.contains(&want), "{want} not in {got:#?}");
    }
    let budget = got
        .iter()
        .find(|p| p.path.ends_with("max_retrains"))
        .unwrap();
    assert!(budget.message.contains("COUNT/WINDOW"), "{budget}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder_even_from_a_bare_file_name() {
    let text = "[[pipeline]]\nname = \"p\"\n[pipeline.data]\nreference = \"Cargo.toml\"\ncurrent = \"live.csv\"\n";
    // A bare file name (as `--config retraind.toml` gives) has an empty folder.
    let c = Config::parse(text, Path::new("retraind.toml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let cwd = std::env::current_dir().unwrap();
    let current = c.pipelines[0].data.current_location("2026-01-01").unwrap();
    assert_eq!(
        current.describe(),
        cwd.join("live.csv").display().to_string()
    );
}

#[test]
fn estimates_and_the_multivariate_rule_are_checked_with_their_paths() {
    std::fs::write(std::env::temp_dir().join("estimates-ref.csv"), "a,b\n1,2\n").unwrap();
    let base = "[[pipeline]]\nname='p'\n[pipeline.data]\nreference='estimates-ref.csv'\ncurrent='{date}.csv'\n";
    let p = problems(&format!(
        "{base}[pipeline.performance]\nsource='estimated'\nmetric='f1_weighted'\n[pipeline.drift]\nmultivariate_variance=0.5\n"
    ));
    let found: Vec<(&str, &str)> = p
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].0.ends_with("drift.multivariate_variance")
            || found[1].0.ends_with("drift.multivariate_variance"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(k, m)| k.ends_with("performance.metric") && m.contains("cannot be estimated")),
        "{found:?}"
    );
    let regression = base.replace("name='p'\n", "name='p'\ntask='regression'\n");
    let p = problems(&format!(
        "{regression}[pipeline.performance]\nestimate_when_unlabelled=true\n[pipeline.drift]\nmultivariate=true\nmultivariate_variance=1.0\n"
    ));
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "pipeline[0].drift.multivariate_variance",
            "pipeline[0].performance.estimate_when_unlabelled"
        ]
    );
    let ok = parse(&format!(
        "{base}[pipeline.performance]\nsource='estimated'\nmetric='roc_auc'\n[pipeline.drift]\nmultivariate=true\nmultivariate_chunk_size=500\n"
    ))
    .unwrap();
    let pipe = &ok.pipelines[0];
    assert!(pipe.performance.estimates(1_000_000));
    let m = pipe.drift.multivariate.unwrap();
    assert_eq!((m.variance, m.chunk_size(10_000, 2_000)), (0.65, 500));
}

#[test]
fn a_window_in_spark_is_checked_with_its_paths() {
    std::fs::write(std::env::temp_dir().join("spark-ref.csv"), "a,b\n1,2\n").unwrap();
    let base = "[[pipeline]]\nname='p'\n[pipeline.data]\nreference='spark-ref.csv'\n";
    let p = problems(&format!(
        "{base}current='{{date}}.csv'\n[pipeline.data.spark]\nendpoint='sc://lake:15002/;token=hunter2'\ncurrent_table='a b'\ntoken_env='T'\ntoken_file='/nonexistent'\ntimeout='soon'\nepsilon=0.5\n"
    ));
    let found: Vec<(&str, &str)> = p
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let paths: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        paths,
        [
            "pipeline[0].data.current",
            "pipeline[0].data.spark.endpoint",
            "pipeline[0].data.spark.token_file",
            "pipeline[0].data.spark.current_table",
            "pipeline[0].data.spark.timeout",
            "pipeline[0].data.spark.epsilon",
        ],
        "{found:?}"
    );
    assert!(!format!("{found:?}").contains("hunter2"), "{found:?}");
    let ok = parse(&format!(
        "{base}[pipeline.data.spark]\nendpoint='sc://lake:443/;use_ssl=true'\ntoken_env='SPARK_TOKEN'\ncurrent_query=\"SELECT * FROM lake.churn WHERE day = '{{date}}'\"\n"
    ))
    .unwrap();
    let spark = ok.pipelines[0].data.spark.clone().unwrap();
    let source = spark.current_source("2026-12-01");
    assert_eq!(
        source.relation,
        crate::spark::Relation::Query("SELECT * FROM lake.churn WHERE day = '2026-12-01'".into())
    );
    assert_eq!(source.endpoint.to_string(), "sc://lake:443/;use_ssl=true");
    assert_eq!((spark.timeout.as_secs(), spark.epsilon), (1800, 0.001));
}

#[test]
fn the_checks_memory_budget_is_checked_with_its_path() {
    std::fs::write(std::env::temp_dir().join("budget-ref.csv"), "a,b\n1,2\n").unwrap();
    let base = "[[pipeline]]\nname='p'\n[pipeline.data]\nreference='budget-ref.csv'\ncurrent='{date}.csv'\n";
    let p = problems(&format!(
        "{base}[pipeline.check]\nmemory_budget='1KiB'\nepsilon=2.0\n"
    ));
    let found: Vec<(&str, &str)> = p
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "pipeline[0].check.memory_budget",
                "1024 bytes is too small; give at least 16MiB"
            ),
            (
                "pipeline[0].check.epsilon",
                "2 is out of range; use 0.00005 to 0.25"
            )
        ]
    );
    let p = problems(&format!("{base}[pipeline.check]\nmemory_budget='lots'\n"));
    assert_eq!(p[0].path, "pipeline[0].check.memory_budget", "{p:?}");
    let ok = parse(&format!("{base}[pipeline.check]\nmemory_budget='1GiB'\n")).unwrap();
    let plan = ok.pipelines[0].check;
    assert_eq!((plan.budget, plan.epsilon), (1 << 30, 0.001));
    assert!(plan.streams((512 << 20) + 1) && !plan.streams(512 << 20));
    let default = parse(base).unwrap().pipelines[0].check;
    assert_eq!(default.budget, 2 << 30);
}

#[test]
fn the_console_setting_names_its_choices() {
    let p = problems("[server]\nconsole = \"sometimes\"\n[[pipeline]]\nname='x'\n");
    let console: Vec<&Problem> = p.iter().filter(|p| p.path == "server.console").collect();
    assert_eq!(console.len(), 1, "{p:?}");
    assert_eq!(
        console[0].message,
        "`sometimes` is not a console setting; write \"login\", \"public\" or \"off\""
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a\n1\n").unwrap();
    let text = "[server]\nconsole = \"public\"\n[[pipeline]]\nname='p'\n[pipeline.data]\nreference='ref.csv'\ncurrent='{date}.csv'\n";
    let c = Config::parse(text, &dir.path().join("c.toml"), &[]).unwrap();
    assert_eq!(c.server.console, ConsoleAccess::Public);
    let c = Config::parse(
        &text.replace("console = \"public\"\n", ""),
        &dir.path().join("c.toml"),
        &[],
    )
    .unwrap();
    assert_eq!(c.server.console, ConsoleAccess::Login);
}
