//! High availability on PostgreSQL: two real daemons on one store. Exactly one leads; the
//! standby serves metrics and the read API and refuses to start cycles; when the leader is
//! killed (SIGKILL) the standby takes over within 30 s with the default lease and resumes the
//! cycle in flight, which completes exactly once.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use retraind::cycle::CycleState;

use crate::helpers::{Db, Env, Opts, Server, TOKEN, free_port, wait_http, wait_state};

fn daemon(env: &Env, instance: &str, port: u16) -> Child {
    env.run_command()
        .env("RETRAIND_DAEMON__INSTANCE", instance)
        .env("RETRAIND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(env.dir.path().join(format!("{instance}.log"))).unwrap(),
        ))
        .spawn()
        .unwrap()
}

async fn leads(port: u16, instance: &str) -> bool {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return false;
    };
    let text = r.text().await.unwrap_or_default();
    text.contains(&format!("retraind_leader{{instance=\"{instance}\"}} 1"))
}

#[tokio::test]
async fn one_leader_a_standby_and_a_failover_that_resumes_the_cycle() {
    let opts = Opts {
        approval: "manual",
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Postgres, opts).await else {
        return;
    };
    let (pa, pb) = (free_port(), free_port());
    let mut a = Server(daemon(&env, "a", pa));
    wait_http(&format!("127.0.0.1:{pa}")).await;
    let b = Server(daemon(&env, "b", pb));
    wait_http(&format!("127.0.0.1:{pb}")).await;
    // a started first and leads; b stands by.
    crate::helpers::eventually(Duration::from_secs(20), "a leads", || async {
        leads(pa, "a").await.then_some(())
    })
    .await;
    assert!(!leads(pb, "b").await);
    let metrics = reqwest::get(format!("http://127.0.0.1:{pb}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("retraind_leader{instance=\"b\"} 0"),
        "{metrics}"
    );
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://127.0.0.1:{pb}/api/v1/pipelines/p1/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("leader (a)"));

    let id = crate::helpers::trigger_api(&format!("127.0.0.1:{pa}"))
        .await
        .expect("the leader accepts the trigger");
    let store = env.store().await;
    wait_state(
        &store,
        id,
        CycleState::AwaitingApproval,
        Duration::from_secs(120),
    )
    .await;

    // The leader dies without a word; b takes over within 30 s.
    crate::helpers::kill9(&mut a.0);
    let died = Instant::now();
    crate::helpers::eventually(Duration::from_secs(40), "b leads", || async {
        leads(pb, "b").await.then_some(())
    })
    .await;
    let failover = died.elapsed();
    assert!(
        failover < Duration::from_secs(30),
        "failover took {failover:?}"
    );
    eprintln!("failover after {failover:?}");
    let lease = store.lease().await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.token), ("b", 2));

    // The cycle in flight is b's now: an approval through b completes it, once.
    let r = client
        .post(format!("http://127.0.0.1:{pb}/api/v1/cycles/{id}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"approver": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(60)).await;
    assert!(done.resumes >= 1, "{done:?}");
    assert_eq!(store.versions("p1").await.unwrap().len(), 1);
    assert_eq!(store.deployments("p1", 10).await.unwrap().len(), 1);
    drop(b);
}
