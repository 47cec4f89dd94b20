//! The approval rules, as pure functions every caller shares: who may decide (the
//! allow-list, by name or by Slack user id), whether a new decision is recorded (one per
//! approver, none once the cycle is settled), and how a cycle's decisions settle it
//! (approved by `required` people, rejected by one, or expired). The store applies
//! [`admit`] inside its transaction; the approval step and the API read [`settle`].

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ApprovalDecision;

/// A recorded approval decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRow {
    pub approver: String,
    pub channel: String,
    pub decision: ApprovalDecision,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Whether an approval decision was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The same approver already decided this cycle; the first decision stands.
    Duplicate,
    /// The cycle already has its decision (a rejection or enough approvals), or no longer
    /// awaits one; nothing was recorded.
    Settled,
    /// The signed request that carries the decision was recorded before (a replay); nothing
    /// was recorded.
    Replayed,
}

/// Whether a decision by `approver` may join those already `recorded` for a cycle that
/// needs `required` approvals.
pub fn admit(recorded: &[ApprovalRow], approver: &str, required: usize) -> Recorded {
    if recorded.iter().any(|a| same_name(&a.approver, approver)) {
        return Recorded::Duplicate;
    }
    match settle(recorded, required, None, None) {
        Settlement::Pending { .. } => Recorded::New,
        _ => Recorded::Settled,
    }
}

/// Where a cycle's approval stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement<'a> {
    /// Waiting: this many approvals so far.
    Pending { approvals: usize },
    /// `required` people approved (in the order they did).
    Approved(Vec<&'a ApprovalRow>),
    /// Someone rejected it.
    Rejected(&'a ApprovalRow),
    /// The request expired without a decision (expired = rejected).
    Expired,
}

/// How `approvals` settle a request that needs `required` approvals and expires at
/// `deadline`, looked at `at` (`None`: regardless of time). A rejection wins over
/// approvals; approvals recorded before the deadline count even when `at` is past it.
pub fn settle(
    approvals: &[ApprovalRow],
    required: usize,
    deadline: Option<DateTime<Utc>>,
    at: Option<DateTime<Utc>>,
) -> Settlement<'_> {
    if let Some(r) = approvals
        .iter()
        .find(|a| a.decision == ApprovalDecision::Reject)
    {
        return Settlement::Rejected(r);
    }
    let approved: Vec<&ApprovalRow> = approvals
        .iter()
        .filter(|a| a.decision == ApprovalDecision::Approve)
        .collect();
    if approved.len() >= required.max(1) {
        return Settlement::Approved(approved);
    }
    match (deadline, at) {
        (Some(d), Some(t)) if d <= t => Settlement::Expired,
        _ => Settlement::Pending {
            approvals: approved.len(),
        },
    }
}

/// A name as the allow-list compares it: trimmed, without a leading `@`.
fn normal(name: &str) -> &str {
    name.trim().trim_start_matches('@')
}

/// Whether two recorded names are one person (`@alice` from Slack, `alice` from the CLI).
fn same_name(a: &str, b: &str) -> bool {
    normal(a) == normal(b)
}

/// Who is deciding: the name recorded with the decision, and (Slack) the stable user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// `@username` for Slack (the user id when Slack sends no name), else the name given.
    pub name: String,
    /// Slack's user id (`U0123ABC`), the identifier Slack recommends matching on.
    pub id: Option<String>,
}

impl Approver {
    /// Someone known only by name (the CLI, the API, a webhook, the config).
    pub fn named(name: &str) -> Approver {
        Approver {
            name: name.to_string(),
            id: None,
        }
    }
}

/// Whether `who` is in a pipeline's `approvers` list: an entry matches the user id, the
/// name, or the name without its `@`. An empty list admits anyone who may call the API
/// (`empty_admits`), but never a Slack click: Slack decisions need a listed approver.
pub fn allowed(approvers: &[String], who: &Approver, empty_admits: bool) -> bool {
    if approvers.is_empty() {
        return empty_admits;
    }
    let name = normal(&who.name);
    approvers
        .iter()
        .any(|a| who.id.as_deref() == Some(a.trim()) || (!name.is_empty() && normal(a) == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(who: &str, decision: ApprovalDecision, at: i64) -> ApprovalRow {
        ApprovalRow {
            approver: who.into(),
            channel: "api".into(),
            decision,
            reason: String::new(),
            at: DateTime::from_timestamp(at, 0).unwrap(),
        }
    }

    #[test]
    fn approvals_settle_by_count_rejection_or_expiry() {
        use ApprovalDecision::*;
        let t = |s| DateTime::from_timestamp(s, 0);
        let one = [row("a", Approve, 1)];
        assert_eq!(
            settle(&one, 2, t(10), t(5)),
            Settlement::Pending { approvals: 1 }
        );
        assert_eq!(settle(&one, 2, t(10), t(10)), Settlement::Expired);
        let two = [row("a", Approve, 1), row("b", Approve, 2)];
        assert!(matches!(settle(&two, 2, t(10), t(20)), Settlement::Approved(v) if v.len() == 2));
        let rejected = [row("a", Approve, 1), row("b", Reject, 2)];
        assert!(
            matches!(settle(&rejected, 1, None, None), Settlement::Rejected(r) if r.approver == "b")
        );
        assert_eq!(admit(&one, "a", 2), Recorded::Duplicate);
        // One person from Slack (`@a`) and from the CLI (`a`) counts once.
        assert_eq!(admit(&one, "@a", 2), Recorded::Duplicate);
        assert_eq!(admit(&one, "b", 2), Recorded::New);
        assert_eq!(admit(&two, "c", 2), Recorded::Settled);
        assert_eq!(admit(&rejected, "c", 3), Recorded::Settled);
    }

    /// A Slack user is admitted by the id the list names, or by name with or without `@`,
    /// and recorded under `@name`; nobody else is, and an empty list admits no Slack click.
    #[test]
    fn the_allow_list_matches_ids_and_names() {
        let alice = Approver {
            name: "@alice".into(),
            id: Some("U0ALICE".into()),
        };
        assert!(allowed(&["U0ALICE".into()], &alice, false));
        assert!(allowed(&["@alice".into()], &alice, false));
        assert!(allowed(&[" alice ".into()], &alice, false));
        assert!(!allowed(&["U0BOB".into(), "bob".into()], &alice, false));
        assert!(!allowed(&[], &alice, false));
        assert!(allowed(&[], &Approver::named("ops"), true));
        assert!(allowed(&["ops".into()], &Approver::named("ops"), true));
        assert!(!allowed(&["ops".into()], &Approver::named("dev"), true));
    }
}
