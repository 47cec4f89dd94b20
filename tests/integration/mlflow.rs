//! The MLflow mirror against a real `mlflow server` (pip; `$RETRAIND_TEST_MLFLOW` or `mlflow`
//! on PATH): a deployed cycle shows up as a finished run with its params and per-epoch
//! metrics, a registered model version, and the `champion` alias on it — reached through TLS
//! signed by a private CA (a TLS-terminating proxy in front of the server).

use std::process::{Command, Stdio};
use std::time::Duration;

use retraind::cycle::Outcome;
use serde_json::Value;

use crate::helpers::{
    Db, Env, Opts, Server, eventually, free_port, json, private_ca, program, run_cycle, tls_proxy,
    unavailable,
};

async fn get(base: &str, path: &str, query: &[(&str, &str)]) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .query(query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_version_is_mirrored_to_a_real_mlflow_server() {
    let Some(bin) = program("mlflow", "RETRAIND_TEST_MLFLOW") else {
        unavailable("mlflow (pip install mlflow)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server(
        Command::new(bin)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(90), "mlflow server /health", || {
        let url = format!("{base}/health");
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    // retraind reaches the server through TLS signed by a private CA (`mlflow.ca_file`);
    // the test reads it back over plain HTTP.
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = private_ca(certs.path());
    let tls_port = tls_proxy(port, tls).await;
    let opts = Opts {
        epochs: 8,
        extra: format!(
            "[pipeline.mlflow]\ntracking_uri = \"https://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\nexperiment = \"retraind-test\"\nregistered_model = \"churn-model\"\n",
            ca.display()
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    let versions = running.engine.store().versions("p1").await.unwrap();
    let mirrored = &json(&versions[0].lineage)["mlflow"];
    let run_id = mirrored["run_id"]
        .as_str()
        .expect("run id recorded")
        .to_string();
    assert_eq!(mirrored["version"], "1");

    // The run: finished, tagged with the cycle, params and per-epoch metrics.
    let run = get(&base, "/api/2.0/mlflow/runs/get", &[("run_id", &run_id)]).await;
    assert_eq!(run["run"]["info"]["status"], "FINISHED", "{run}");
    let tags = run["run"]["data"]["tags"].as_array().unwrap();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "retraind.cycle"
                && t["value"].as_str() == Some(&*row.id.to_string())),
        "{run}"
    );
    let params = run["run"]["data"]["params"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["key"] == "epochs" && p["value"] == "8"),
        "{run}"
    );
    let history = get(
        &base,
        "/api/2.0/mlflow/metrics/get-history",
        &[("run_id", &run_id), ("metric_key", "valid_loss")],
    )
    .await;
    let steps = history["metrics"].as_array().unwrap().len();
    let epochs = json(&versions[0].metrics)["epochs_run"].as_u64().unwrap() as usize;
    assert_eq!(steps, epochs, "{history}");
    let metrics = run["run"]["data"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["key"] == "model_size_mb"), "{run}");

    // The registry: version 1 of the registered model, with the champion alias.
    let alias = get(
        &base,
        "/api/2.0/mlflow/registered-models/alias",
        &[("name", "churn-model"), ("alias", "champion")],
    )
    .await;
    assert_eq!(alias["model_version"]["version"], "1", "{alias}");
    assert_eq!(alias["model_version"]["run_id"], run_id.as_str());
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
