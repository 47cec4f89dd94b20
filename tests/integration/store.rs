//! The store suite, run against SQLite and PostgreSQL alike.

use chrono::Utc;
use retraind::cycle::{CycleState, TriggerKind};
use retraind::store::{
    ApprovalRow, CreateOutcome, CycleUpdate, NewVersion, Recorded, Store, StoreError,
};
use serde_json::json;

use crate::helpers::{Db, store_url};

macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                run(Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                run(Db::Postgres).await
            }
            async fn run(db: Db) {
                let dir = tempfile::tempdir().unwrap();
                let Some(url) = store_url(db, dir.path()).await else {
                    return;
                };
                let store = Store::connect(&url, 5).await.unwrap();
                store.ensure_pipeline("p", Utc::now()).await.unwrap();
                #[allow(clippy::redundant_closure_call)]
                ($body)(store).await;
            }
        }
    };
}

both_stores!(one_active_cycle_per_pipeline, |store: Store| async move {
    let (a, b) = tokio::join!(
        store.create_cycle("p", TriggerKind::Manual, "2026-11-27", None, Utc::now()),
        store.create_cycle("p", TriggerKind::Manual, "2026-11-27", None, Utc::now()),
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, CreateOutcome::AlreadyRunning(_)));
    let CreateOutcome::Created(id) = outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(outcomes[1], CreateOutcome::AlreadyRunning(id));
    assert_eq!(store.active_cycles().await.unwrap().len(), 1);
    // Once it ends, a new one may start.
    store
        .transition(
            id,
            CycleState::Scheduled,
            CycleState::Failed,
            "test",
            CycleUpdate::default(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.create_cycle("p", TriggerKind::Manual, "2026-11-27", None, Utc::now()).await.unwrap(),
        CreateOutcome::Created(n) if n != id
    ));
});

both_stores!(
    transitions_are_compare_and_set_and_legal,
    |store: Store| async move {
        let CreateOutcome::Created(id) = store
            .create_cycle(
                "p",
                TriggerKind::Scheduled,
                "2026-11-27",
                Some(Utc::now()),
                Utc::now(),
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        store
            .transition(
                id,
                CycleState::Scheduled,
                CycleState::Loading,
                "go",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        // A second writer that still believes the cycle is scheduled loses.
        let e = store
            .transition(
                id,
                CycleState::Scheduled,
                CycleState::Loading,
                "go",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        // Skipping the gate is refused before touching the database.
        let e = store
            .transition(
                id,
                CycleState::Loading,
                CycleState::Deploying,
                "x",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e}");
        let t = store.transitions(id).await.unwrap();
        assert_eq!(
            t.iter().map(|t| t.to).collect::<Vec<_>>(),
            vec![CycleState::Scheduled, CycleState::Loading]
        );
        assert_eq!(t[1].from, Some(CycleState::Scheduled));
        let row = store.pipeline("p").await.unwrap().unwrap();
        assert!(
            row.last_scheduled_at.is_some(),
            "a scheduled trigger records its fire time"
        );
    }
);

both_stores!(
    versions_register_with_the_transition_and_aliases_move_together,
    |store: Store| async move {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let CreateOutcome::Created(id) = store
                .create_cycle("p", TriggerKind::Manual, "d", None, Utc::now())
                .await
                .unwrap()
            else {
                panic!()
            };
            for (from, to) in [
                (CycleState::Scheduled, CycleState::Loading),
                (CycleState::Loading, CycleState::Checking),
                (CycleState::Checking, CycleState::Decided),
                (CycleState::Decided, CycleState::Training),
            ] {
                store
                    .transition(id, from, to, "t", CycleUpdate::default(), Utc::now())
                    .await
                    .unwrap();
            }
            let v = store
                .register_trained(
                    NewVersion {
                        pipeline: "p".into(),
                        cycle_id: id,
                        path: format!("/m/{id}"),
                        metrics: json!({"a": 1}),
                        lineage: json!({}),
                    },
                    "trained",
                    Utc::now(),
                )
                .await
                .unwrap();
            let c = store.cycle(id).await.unwrap().unwrap();
            assert_eq!(
                (c.state, c.candidate_version),
                (CycleState::Trained, Some(v.id))
            );
            // A second registration for the same cycle is impossible (unique cycle id).
            assert!(
                store
                    .register_trained(
                        NewVersion {
                            pipeline: "p".into(),
                            cycle_id: id,
                            path: "x".into(),
                            metrics: json!({}),
                            lineage: json!({})
                        },
                        "again",
                        Utc::now()
                    )
                    .await
                    .is_err()
            );
            store
                .transition(
                    id,
                    CycleState::Trained,
                    CycleState::Failed,
                    "end",
                    CycleUpdate::default(),
                    Utc::now(),
                )
                .await
                .unwrap();
            ids.push(v);
        }
        assert_eq!(
            ids.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(store.promote("p", ids[0].id, Utc::now()).await.unwrap());
        assert!(store.promote("p", ids[1].id, Utc::now()).await.unwrap());
        assert!(
            !store.promote("p", ids[1].id, Utc::now()).await.unwrap(),
            "idempotent"
        );
        assert_eq!(
            store.alias("p", "champion").await.unwrap().unwrap().version,
            2
        );
        assert_eq!(
            store.alias("p", "previous").await.unwrap().unwrap().version,
            1
        );
        store
            .set_version_metric(ids[1].id, "holdout_accuracy", 0.93)
            .await
            .unwrap();
        let v = store.version(ids[1].id).await.unwrap().unwrap();
        assert_eq!(v.metrics, json!({"a": 1, "holdout_accuracy": 0.93}));
    }
);

both_stores!(
    approvals_are_idempotent_per_approver,
    |store: Store| async move {
        let CreateOutcome::Created(id) = store
            .create_cycle("p", TriggerKind::Manual, "d", None, Utc::now())
            .await
            .unwrap()
        else {
            panic!()
        };
        let row = |who: &str, decision: &str| ApprovalRow {
            approver: who.into(),
            channel: "api".into(),
            decision: decision.parse().unwrap(),
            reason: "r".into(),
            at: Utc::now(),
        };
        assert_eq!(
            store
                .record_approval(id, &row("ann", "approve"))
                .await
                .unwrap(),
            Recorded::New
        );
        assert_eq!(
            store
                .record_approval(id, &row("ann", "reject"))
                .await
                .unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            store
                .record_approval(id, &row("bob", "approve"))
                .await
                .unwrap(),
            Recorded::New
        );
        let a = store.approvals(id).await.unwrap();
        assert_eq!(
            a.iter()
                .map(|a| (a.approver.as_str(), a.decision.as_str()))
                .collect::<Vec<_>>(),
            vec![("ann", "approve"), ("bob", "approve")]
        );
        store.ready().await.unwrap();
    }
);

both_stores!(
    previous_drift_is_newest_first_and_excludes_the_cycle,
    |store: Store| async move {
        let mut ids = Vec::new();
        for drifted in [true, false, true, true] {
            let CreateOutcome::Created(id) = store
                .create_cycle("p", TriggerKind::Manual, "d", None, Utc::now())
                .await
                .unwrap()
            else {
                panic!()
            };
            store
                .save_report(id, "p", drifted, &json!({}), Utc::now())
                .await
                .unwrap();
            store
                .transition(
                    id,
                    CycleState::Scheduled,
                    CycleState::Failed,
                    "t",
                    CycleUpdate::default(),
                    Utc::now(),
                )
                .await
                .unwrap();
            ids.push(id);
        }
        assert_eq!(
            store.previous_drift("p", ids[3], 5).await.unwrap(),
            vec![true, false, true]
        );
        assert_eq!(
            store.previous_drift("p", ids[3], 1).await.unwrap(),
            vec![true]
        );
        assert!(
            store
                .previous_drift("p", ids[0], 3)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .previous_drift("other", ids[3], 3)
                .await
                .unwrap()
                .is_empty()
        );
    }
);
