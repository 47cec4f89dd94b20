//! The store suite, run against SQLite and PostgreSQL alike.

use chrono::Utc;
use retraind::approval;
use retraind::cycle::{CycleState, TriggerKind};
use retraind::guards::Hold;
use retraind::performance::Metric;
use retraind::records::{Lineage, ScoreKey, VersionMetrics};
use retraind::store::{
    ApprovalRow, ChampionMove, CreateOutcome, CycleUpdate, DeployKind, GLOBAL, HoldKind,
    MoveOutcome, NewVersion, Recorded, Store, StoreError,
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
                        metrics: VersionMetrics {
                            scores: [(ScoreKey::Other("a".into()), Some(1.0))].into(),
                            ..VersionMetrics::default()
                        },
                        lineage: Lineage::default(),
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
                            metrics: VersionMetrics::default(),
                            lineage: Lineage::default()
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
        // Every champion move opens a move first; the alias move closes it.
        let moved =
            |version_id: i64, kind: DeployKind, actor: &'static str, reason: &'static str| {
                let store = store.clone();
                async move {
                    let mv = store
                        .begin_move("p", kind, version_id, None, Utc::now())
                        .await
                        .unwrap();
                    let m = ChampionMove {
                        pipeline: "p",
                        version_id,
                        kind,
                        cycle: None,
                        actor,
                        reason,
                        move_id: mv.id,
                    };
                    let promoted = store.promote(&m, Utc::now()).await.unwrap();
                    assert!(store.open_move("p").await.unwrap().is_none());
                    promoted
                }
            };
        let deploy = DeployKind::Deploy;
        assert!(moved(ids[0].id, deploy, "test", "deploy").await);
        assert!(moved(ids[1].id, deploy, "test", "deploy").await);
        assert!(
            !moved(ids[1].id, deploy, "test", "deploy").await,
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
        // One move at a time: the same move again (a retry, a restart) is the same row and
        // so the same delivery id; any other waits (a transient refusal) until it closes.
        let open = store
            .begin_move("p", deploy, ids[0].id, Some(7), Utc::now())
            .await
            .unwrap();
        let again = store
            .begin_move("p", deploy, ids[0].id, Some(7), Utc::now())
            .await
            .unwrap();
        assert_eq!(
            (again.id, again.from_version_id),
            (open.id, Some(ids[1].id))
        );
        let other = store
            .begin_move("p", DeployKind::Rollback, ids[0].id, None, Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(other, StoreError::MoveInProgress { id, .. } if id == open.id),
            "{other}"
        );
        assert!(other.is_transient());
        store.undo_move(open.id, Utc::now()).await.unwrap();
        assert_eq!(
            store.moves("p", 1).await.unwrap()[0].outcome,
            Some(MoveOutcome::Undone)
        );
        // A rollback restores v1; `previous` becomes what preceded v1 (nothing), never v2.
        assert!(moved(ids[0].id, DeployKind::Rollback, "alice", "bad model").await);
        assert_eq!(
            store.alias("p", "champion").await.unwrap().unwrap().version,
            1
        );
        assert!(store.alias("p", "previous").await.unwrap().is_none());
        let moves = store.deployments("p", 10).await.unwrap();
        assert_eq!(
            moves
                .iter()
                .map(|d| (d.kind, d.version, d.actor.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (DeployKind::Rollback, 1, "alice"),
                (DeployKind::Deploy, 2, "test"),
                (DeployKind::Deploy, 1, "test")
            ]
        );
        assert_eq!(moves[0].from_version_id, Some(ids[1].id));
        // Back to v2 for the rest of the test.
        assert!(moved(ids[1].id, deploy, "test", "deploy").await);
        // Holds: per pipeline and global, lifted by clear_holds.
        let hold = Hold {
            by: "alice".into(),
            reason: "incident".into(),
            at: Utc::now(),
        };
        assert!(store.set_hold("p", HoldKind::Frozen, &hold).await.unwrap());
        assert!(!store.set_hold("p", HoldKind::Frozen, &hold).await.unwrap());
        assert!(
            store
                .set_hold(GLOBAL, HoldKind::Frozen, &hold)
                .await
                .unwrap()
        );
        let h = store.holds("p").await.unwrap();
        assert!(h.frozen.is_some() && h.global.is_some() && h.paused.is_none());
        // The one-query snapshot reads the same holds, aliases and newest cycles.
        store
            .create_cycle("p", TriggerKind::Manual, "d2", None, Utc::now())
            .await
            .unwrap();
        let s = store.snapshot("p").await.unwrap();
        assert_eq!(
            (
                s.holds.frozen.map(|h| h.by),
                s.holds.global.map(|h| h.reason),
                s.holds.paused.is_none()
            ),
            (
                Some("alice".to_string()),
                Some("incident".to_string()),
                true
            )
        );
        let version = |v: Option<retraind::store::ModelVersion>| {
            v.map(|v| (v.id, v.version, v.path, v.created_at))
        };
        assert_eq!(
            (version(s.champion), version(s.previous)),
            (
                version(store.alias("p", "champion").await.unwrap()),
                version(store.alias("p", "previous").await.unwrap())
            )
        );
        let recent = store.cycles(Some("p"), 100).await.unwrap();
        let newest = |terminal: bool| {
            recent
                .iter()
                .find(|c| c.state.is_terminal() == terminal)
                .map(|c| (c.id, c.state, c.reason.clone()))
        };
        assert_eq!(s.active.map(|c| (c.id, c.state, c.reason)), newest(false));
        assert_eq!(s.last.map(|c| (c.id, c.state, c.reason)), newest(true));
        assert_eq!(store.clear_holds("p").await.unwrap(), 1);
        assert_eq!(store.clear_holds(GLOBAL).await.unwrap(), 1);
        assert!(store.holds("p").await.unwrap().global.is_none());
        store
            .set_version_score(ids[1].id, &ScoreKey::Holdout(Metric::Accuracy), 0.93)
            .await
            .unwrap();
        let v = store.version(ids[1].id).await.unwrap().unwrap();
        assert_eq!(
            (
                v.metrics.score(&ScoreKey::Other("a".into())),
                v.metrics.holdout(Metric::Accuracy)
            ),
            (Some(1.0), Some(0.93))
        );
    }
);

/// A cycle walked to `awaiting_approval` along the legal path.
async fn awaiting_cycle(store: &Store, pipeline: &str) -> i64 {
    use CycleState::*;
    let CreateOutcome::Created(id) = store
        .create_cycle(pipeline, TriggerKind::Manual, "d", None, Utc::now())
        .await
        .unwrap()
    else {
        panic!()
    };
    let path = [
        Scheduled,
        Loading,
        Checking,
        Decided,
        Training,
        Trained,
        Evaluating,
        AwaitingApproval,
    ];
    for w in path.windows(2) {
        store
            .transition(id, w[0], w[1], "walk", CycleUpdate::default(), Utc::now())
            .await
            .unwrap();
    }
    id
}

both_stores!(
    approvals_are_idempotent_per_approver_and_stop_once_settled,
    |store: Store| async move {
        store.ensure_pipeline("q", Utc::now()).await.unwrap();
        let id = awaiting_cycle(&store, "p").await;
        let row = |who: &str, decision: &str| ApprovalRow {
            approver: who.into(),
            channel: "api".into(),
            decision: decision.parse().unwrap(),
            reason: "r".into(),
            at: Utc::now(),
        };
        let record = |who: &'static str, d: &'static str| {
            let store = store.clone();
            let r = row(who, d);
            async move {
                let admit = |rows: &[ApprovalRow]| approval::admit(rows, &r.approver, 2);
                store.record_approval(id, &r, None, admit).await.unwrap()
            }
        };
        assert_eq!(record("ann", "approve").await, Recorded::New);
        assert_eq!(record("ann", "reject").await, Recorded::Duplicate);
        assert_eq!(record("bob", "approve").await, Recorded::New);
        // Two approvals were required and given: a third decision records nothing.
        assert_eq!(record("cat", "reject").await, Recorded::Settled);
        let a = store.approvals(id).await.unwrap();
        assert_eq!(
            a.iter()
                .map(|a| (a.approver.as_str(), a.decision.as_str()))
                .collect::<Vec<_>>(),
            vec![("ann", "approve"), ("bob", "approve")]
        );
        // Two people approving the same cycle at the same moment: one decision.
        let id = awaiting_cycle(&store, "q").await;
        let tasks: Vec<_> = ["dan", "eve", "fay", "gus"]
            .into_iter()
            .map(|who| {
                let store = store.clone();
                let r = row(who, "approve");
                tokio::spawn(async move {
                    let admit = |rows: &[ApprovalRow]| approval::admit(rows, &r.approver, 1);
                    store.record_approval(id, &r, None, admit).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|r| **r == Recorded::New).count(),
            1,
            "{results:?}"
        );
        assert_eq!(store.approvals(id).await.unwrap().len(), 1);
        // A signed decision's request id is remembered in the decision's own transaction:
        // a replay of a recorded decision is refused; a try that recorded nothing (settled,
        // or failed) leaves the id free, so the sender's retry is taken.
        store.ensure_pipeline("s", Utc::now()).await.unwrap();
        store.ensure_pipeline("t", Utc::now()).await.unwrap();
        let (s1, t1) = (
            awaiting_cycle(&store, "s").await,
            awaiting_cycle(&store, "t").await,
        );
        let signed = |cycle: i64, who: &'static str, channel: &'static str, sig: &'static str| {
            let store = store.clone();
            let mut r = row(who, "approve");
            r.channel = channel.into();
            async move {
                let admit = |rows: &[ApprovalRow]| approval::admit(rows, &r.approver, 2);
                store
                    .record_approval(cycle, &r, Some(sig), admit)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(signed(s1, "hal", "slack", "sig-1").await, Recorded::New);
        assert_eq!(
            signed(s1, "hal", "slack", "sig-1").await,
            Recorded::Replayed
        );
        // Ids are per channel.
        assert_eq!(signed(s1, "ian", "webhook", "sig-1").await, Recorded::New);
        // Settled: nothing recorded, and sig-2 is not taken by it.
        assert_eq!(signed(s1, "jo", "slack", "sig-2").await, Recorded::Settled);
        assert_eq!(signed(t1, "jo", "slack", "sig-2").await, Recorded::New);
        assert_eq!(signed(t1, "jo", "slack", "sig-2").await, Recorded::Replayed);
        assert_eq!(store.approvals(s1).await.unwrap().len(), 2);
        assert_eq!(store.approvals(t1).await.unwrap().len(), 1);
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
                .save_report(
                    id,
                    "p",
                    &retraind::store::ReportSummary {
                        dataset_drift: drifted,
                        drift_share: Some(ids.len() as f64 / 4.0),
                        // A NULL first and numbers after, in the same prepared statement.
                        metric: (!ids.is_empty()).then_some(0.9),
                        ..Default::default()
                    },
                    &json!({}),
                    Utc::now(),
                )
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
        // The snapshot's newest check, and the figures each report keeps for the charts.
        let glance = store.snapshot("p").await.unwrap().last_check.unwrap();
        assert_eq!(
            (glance.cycle, glance.dataset_drift, glance.drift_share),
            (ids[3], true, Some(0.75))
        );
        let points = store.report_points("p", 10).await.unwrap();
        assert_eq!(
            points
                .iter()
                .map(|p| (p.cycle, p.dataset_drift, p.drift_share, p.metric))
                .collect::<Vec<_>>(),
            vec![
                (ids[3], true, Some(0.75), Some(0.9)),
                (ids[2], true, Some(0.5), Some(0.9)),
                (ids[1], false, Some(0.25), Some(0.9)),
                (ids[0], true, Some(0.0), None),
            ]
        );
    }
);

both_stores!(
    a_leader_that_lost_its_lease_cannot_write,
    |store: Store| async move {
        use std::time::Duration;
        let url_store = store.clone();
        let ttl = Duration::from_millis(800);
        let a = url_store.acquire_lease("a", ttl, Utc::now()).await.unwrap();
        assert_eq!(a, Some(1));
        store.set_fence(Some(("a".into(), 1)));
        // While a's lease is live, b cannot take it; a renews with the same token.
        assert_eq!(
            store.acquire_lease("b", ttl, Utc::now()).await.unwrap(),
            None
        );
        assert_eq!(
            store.acquire_lease("a", ttl, Utc::now()).await.unwrap(),
            Some(1)
        );
        let CreateOutcome::Created(id) = store
            .create_cycle("p", TriggerKind::Manual, "d", None, Utc::now())
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
                "a leads",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        // a stalls past its lease; b takes over with a higher token.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            store.acquire_lease("b", ttl, Utc::now()).await.unwrap(),
            Some(2)
        );
        let err = store
            .transition(
                id,
                CycleState::Loading,
                CycleState::Checking,
                "stale a",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced { token: 1, .. }), "{err}");
        assert!(err.to_string().contains("no longer holds the leader lease"));
        let c = store.cycle(id).await.unwrap().unwrap();
        assert_eq!(
            c.state,
            CycleState::Loading,
            "the stale write changed nothing"
        );
        // a cannot take the lease back while b holds it; b writes under its own fence.
        assert_eq!(
            store.acquire_lease("a", ttl, Utc::now()).await.unwrap(),
            None
        );
        store.set_fence(Some(("b".into(), 2)));
        store
            .transition(
                id,
                CycleState::Loading,
                CycleState::Checking,
                "b leads",
                CycleUpdate::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        store.release_lease("b").await.unwrap();
        assert_eq!(
            store.acquire_lease("a", ttl, Utc::now()).await.unwrap(),
            Some(3)
        );
    }
);
