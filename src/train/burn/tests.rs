//! The burn trainer's tests: determinism, the failed-to-learn guard, preprocessing, the
//! regressor, devices and the stratified split.

use std::path::Path;

use super::*;
use crate::data::{Input, RoleSpec, Roles, load_inferred};
use crate::train::Predictor;

fn config() -> BurnConfig {
    BurnConfig {
        task: Task::Classification,
        fail_below_r2: None,
        device: ComputeDevice::Cpu,
        hidden: vec![32, 16],
        dropout: 0.1,
        learning_rate: 0.01,
        batch_size: 64,
        epochs: 15,
        patience: 5,
        validation_share: 0.2,
        seed: 42,
        fail_below_accuracy: 0.1,
        fail_check_epoch: 5,
        activation: Activation::Relu,
        derived: Vec::new(),
        filters: Vec::new(),
        drop_null_rows: false,
    }
}

fn demo_table(dir: &Path) -> Table {
    demo_table_for(dir, Task::Classification)
}

fn demo_table_for(dir: &Path, task: Task) -> Table {
    let path = dir.join(format!("{}.csv", task.name()));
    crate::demo::generate_for(&path, 3000, crate::demo::Regime::NORMAL, 7, task).unwrap();
    let categorical = vec!["segment".to_string()];
    let spec = RoleSpec {
        target: "target",
        categorical: Some(&categorical),
        ..RoleSpec::default()
    };
    load_inferred(&Input::file(&path), &spec, true).unwrap().1
}

/// A training of `table` into `out` with `config`.
fn train(
    table: &Table,
    out: &Path,
    config: BurnConfig,
) -> Result<crate::train::TrainOutput, TrainError> {
    BurnTrainer { config }.train(&request(table, out), &CancelFlag::default(), &|_| {})
}

fn request(table: &Table, out: &Path) -> TrainRequest {
    TrainRequest {
        pipeline: "p".into(),
        cycle_id: 1,
        data: table.clone(),
        roles: Roles {
            numerical: table.numerical.iter().map(|(n, _)| n.clone()).collect(),
            categorical: table.categorical.iter().map(|(n, _)| n.clone()).collect(),
            target: "target".into(),
            prediction: None,
            timestamp: None,
        },
        out_dir: out.to_path_buf(),
        inputs: None,
        remote_run: None,
        record_remote_run: Default::default(),
        timeout: std::time::Duration::from_secs(600),
    }
}

/// The seed's registration threshold (0.9) on the demo data, and the same model twice
/// from the same seed.
#[test]
fn demo_data_trains_past_the_threshold_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo_table(dir.path());
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = train(&table, &out, config()).unwrap();
        let scores = BurnModel::load(&out)
            .unwrap()
            .predict_scored(&table)
            .unwrap();
        (o, scores)
    };
    let (a, sa) = run("a");
    let (b, sb) = run("b");
    assert!(a.valid_accuracy.unwrap() >= 0.9, "{:?}", a.valid_accuracy);
    assert!(a.history.iter().all(|e| e.valid_f1.is_some()));
    assert_eq!(a.history, b.history);
    // The weight files differ in burn's random parameter ids, not in the weights.
    assert_eq!(sa, sb, "same seed, same model");
    let labels = table.target.clone().unwrap();
    let acc = crate::performance::accuracy(&labels, &sa.labels);
    assert!(acc >= 0.9, "{acc}");
}

#[test]
fn a_model_that_fails_to_learn_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo_table(dir.path());
    let strict = BurnConfig {
        fail_below_accuracy: 0.999,
        fail_check_epoch: 2,
        ..config()
    };
    let e = train(&table, &dir.path().join("m"), strict).unwrap_err();
    assert!(
        matches!(e, TrainError::FailedToLearn { epoch: 2, .. }),
        "{e}"
    );
}

/// The seed's preprocessing, configured: a row filter, a ratio and a log1p feature, and
/// another activation. Scoring applies the same derived features.
#[test]
fn configured_preprocessing_is_fitted_saved_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo_table(dir.path());
    let cfg = BurnConfig {
        activation: Activation::Gelu,
        derived: vec![
            Derived::Ratio {
                name: "a_per_b".into(),
                a: "feature_a".into(),
                b: "feature_b".into(),
            },
            Derived::Log1p {
                name: "log_value".into(),
                column: "value".into(),
            },
        ],
        filters: vec![RowFilter {
            column: "feature_c".into(),
            op: FilterOp::Gt,
            value: 0.0,
        }],
        ..config()
    };
    let kept = kept_rows(&table, &cfg).unwrap();
    let positive = table
        .numerical("feature_c")
        .unwrap()
        .iter()
        .filter(|c| **c > 0.0)
        .count();
    assert_eq!(kept.len(), positive);
    let out = dir.path().join("m");
    let o = train(&table, &out, cfg).unwrap();
    assert_eq!(o.train_rows + o.valid_rows, positive);
    let model = BurnModel::load(&out).unwrap();
    let pre = model.preprocess();
    assert_eq!(pre.activation, Activation::Gelu);
    assert_eq!(pre.derived.len(), 2);
    assert_eq!(pre.width(), 4 + 2 + 3);
    // Every row is scored, filtered or not.
    assert_eq!(model.predict(&table).unwrap().len(), table.rows);
    // A derived feature whose input is missing is refused up front.
    let bad = BurnConfig {
        derived: vec![Derived::Log1p {
            name: "x".into(),
            column: "nope".into(),
        }],
        ..config()
    };
    let e = train(&table, &dir.path().join("n"), bad).unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
}

/// A regressor on the demo features (target ≈ 100 ± 40): R² past 0.9 on the data,
/// deterministically, predictions in the target's units, the split stratified by decile.
#[test]
fn a_regressor_learns_the_target_in_its_units() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo_table_for(dir.path(), Task::Regression);
    let cfg = BurnConfig {
        task: Task::Regression,
        fail_below_r2: Some(0.0),
        ..config()
    };
    let run = |name: &str| {
        let out = dir.path().join(name);
        let mut epochs = Vec::new();
        let seen = std::sync::Mutex::new(&mut epochs);
        let o = BurnTrainer {
            config: cfg.clone(),
        }
        .train(&request(&table, &out), &CancelFlag::default(), &|e| {
            seen.lock().unwrap().push(*e)
        })
        .unwrap();
        let p = BurnModel::load(&out)
            .unwrap()
            .predict_scored(&table)
            .unwrap();
        (o, p, epochs)
    };
    let (a, pa, epochs) = run("a");
    let (b, pb, _) = run("b");
    assert_eq!(a.history, b.history);
    assert_eq!(pa, pb, "same seed, same model");
    assert!(pa.classes.is_empty() && pa.probabilities.is_empty());
    assert_eq!(a.valid_accuracy, None);
    assert!(a.extra_metrics["valid_r2"] > 0.9, "{:?}", a.extra_metrics);
    assert!(
        epochs
            .iter()
            .all(|e| e.valid_rmse.is_some() && e.valid_r2.is_some() && e.valid_accuracy.is_none())
    );
    let truth: Vec<f64> = table
        .target
        .clone()
        .unwrap()
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let predicted: Vec<f64> = pa.labels.iter().map(|v| v.parse().unwrap()).collect();
    let r2 = crate::performance::r2(&truth, &predicted);
    assert!(r2 > 0.9, "{r2}");
    // In the target's units: the mean prediction is near the target's mean (≈ 100), not
    // near the standardised 0.
    let mean = predicted.iter().sum::<f64>() / predicted.len() as f64;
    let truth_mean = truth.iter().sum::<f64>() / truth.len() as f64;
    assert!((mean - truth_mean).abs() < 2.0, "{mean} vs {truth_mean}");
    let pre = BurnModel::load(&dir.path().join("a"))
        .unwrap()
        .preprocess()
        .clone();
    assert_eq!(pre.task, Task::Regression);
    let (m, sd) = pre.target_scale.unwrap();
    assert!((m - truth_mean).abs() < 2.0 && sd > 10.0, "{m} {sd}");
    assert_eq!(a.valid_rows, 600);
}

#[test]
fn a_regressor_refuses_a_text_target_and_aborts_when_it_cannot_learn() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = demo_table_for(dir.path(), Task::Regression);
    let cfg = BurnConfig {
        task: Task::Regression,
        fail_below_r2: Some(0.0),
        ..config()
    };
    // Noise for a target: R² stays below 0 on validation, aborted at the check epoch.
    let mut noise = table.clone();
    let n = noise.rows;
    noise.target = Some(
        (0..n)
            .map(|i| format!("{}", (i * 7919 % 1000) as f64 / 10.0))
            .collect(),
    );
    let strict = BurnConfig {
        fail_below_r2: Some(0.5),
        fail_check_epoch: 3,
        ..cfg.clone()
    };
    let e = train(&noise, &dir.path().join("n"), strict).unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::FailedToLearn {
                epoch: 3,
                key: "fail_below_r2",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("train.burn.fail_below_r2 = 0.5"),
        "{e}"
    );
    table.target.as_mut().unwrap()[41] = "n/a".into();
    let e = train(&table, &dir.path().join("t"), cfg).unwrap_err();
    assert!(e.to_string().contains("`n/a` (1 training row"), "{e}");
    assert!(!dir.path().join("t").join(WEIGHTS_FILE).exists());
}

/// A GPU this build cannot drive is refused with the rebuild command, at config time.
#[test]
fn devices_are_checked_against_the_build() {
    assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
    assert!(
        "tpu"
            .parse::<ComputeDevice>()
            .unwrap_err()
            .contains("\"cuda:N\"")
    );
    match "cuda:1".parse::<ComputeDevice>() {
        Ok(d) => assert!(cfg!(feature = "cuda") && d == ComputeDevice::Cuda(1)),
        Err(e) => assert!(
            !cfg!(feature = "cuda") && e.contains("cargo build --release --features cuda"),
            "{e}"
        ),
    }
}

/// A GPU build trains on the GPU device and the model scores on the CPU. Without a GPU,
/// wgpu takes a software Vulkan (Mesa's lavapipe): the code path, not the speed.
#[cfg(feature = "wgpu")]
#[test]
fn the_wgpu_device_trains_a_model_the_cpu_scores() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo_table(dir.path());
    let cfg = BurnConfig {
        device: ComputeDevice::Wgpu,
        epochs: 8,
        ..config()
    };
    let out = dir.path().join("gpu");
    let o = train(&table, &out, cfg).unwrap();
    assert!(o.valid_accuracy.unwrap() >= 0.9, "{:?}", o.valid_accuracy);
    let scores = BurnModel::load(&out).unwrap().predict(&table).unwrap();
    let acc = crate::performance::accuracy(table.target.as_ref().unwrap(), &scores);
    assert!(acc >= 0.9, "{acc}");
}
