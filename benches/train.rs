//! Training benchmark: the burn trainer (the same code path as a cycle's train step) on a
//! CSV of numeric features and a binary target. Prints one JSON line with the timings.
//!
//! Run through `benches/train_vs_pytorch.sh`, which generates the data and times the same
//! MLP in PyTorch in the same run:
//!
//! ```sh
//! cargo bench --bench train -- DATA.csv EPOCHS BATCH HIDDEN
//! RETRAIND_BENCH_DEVICE=cuda cargo bench --features cuda --bench train -- …   # on a GPU
//! ```

use std::path::PathBuf;
use std::time::Instant;

use retraind::data::{self, Input, RoleSpec};
use retraind::train::burn::{BurnConfig, BurnTrainer};
use retraind::train::{CancelFlag, TrainRequest, Trainer};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [path, epochs, batch, hidden] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench train -- DATA.csv EPOCHS BATCH HIDDEN");
        std::process::exit(2);
    };
    let parse = |s: &str| -> usize {
        s.parse().unwrap_or_else(|_| {
            eprintln!("`{s}` is not a number");
            std::process::exit(2)
        })
    };
    let (epochs, batch, hidden) = (parse(epochs), parse(batch), parse(hidden));
    // `train.burn.device`: cpu (default), cuda, cuda:N or wgpu, as the build allows.
    let device_name = std::env::var("RETRAIND_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = device_name.parse().unwrap_or_else(|e: String| {
        eprintln!("RETRAIND_BENCH_DEVICE: {e}");
        std::process::exit(2)
    });
    let spec = RoleSpec {
        target: "target",
        categorical: Some(&[]),
        ..RoleSpec::default()
    };
    let start = Instant::now();
    let (roles, table) = data::load_inferred(&Input::file(&PathBuf::from(path)), &spec, true)
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let loaded = start.elapsed().as_secs_f64();
    let out = std::env::temp_dir().join(format!("retraind-bench-train-{}", std::process::id()));
    let config = BurnConfig {
        task: Default::default(),
        fail_below_r2: None,
        device,
        hidden: vec![hidden, hidden],
        dropout: 0.0,
        learning_rate: 0.001,
        batch_size: batch,
        epochs,
        // Run every epoch, as the peer does.
        patience: epochs,
        validation_share: 0.1,
        seed: 42,
        fail_below_accuracy: 0.0,
        fail_check_epoch: 1,
        activation: Default::default(),
        derived: Vec::new(),
        filters: Vec::new(),
        drop_null_rows: false,
    };
    let request = TrainRequest {
        pipeline: "bench".into(),
        cycle_id: 0,
        data: table,
        roles,
        out_dir: out.clone(),
        inputs: None,
        remote_run: None,
        record_remote_run: Default::default(),
        timeout: std::time::Duration::from_secs(3600),
    };
    let t = Instant::now();
    let output = BurnTrainer { config }
        .train(&request, &CancelFlag::default(), &|_| {})
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let train_s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "{{\"tool\":\"burn\",\"device\":\"{device_name}\",\"rows\":{},\"epochs\":{},\"load_s\":{loaded:.3},\"train_s\":{train_s:.3},\"valid_accuracy\":{:.4}}}",
        output.train_rows + output.valid_rows,
        output.epochs_run,
        output.valid_accuracy.unwrap_or(f64::NAN)
    );
}
