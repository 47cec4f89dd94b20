//! Cron schedules with a timezone: parsing, next and previous fire times, and the catch-up
//! rule. Pure logic, no timers (the [`crate::scheduler`] owns those).
//!
//! Expressions use six fields, seconds first (`0 0 2 * * *` = 02:00 daily), parsed by
//! `croner` exactly as tokio-cron-scheduler parses them. Fire times are computed in the
//! pipeline's IANA timezone every time, so a 02:00 Europe/Berlin job stays at 02:00 local
//! across DST changes (tokio-cron-scheduler 0.15 freezes the UTC offset at job creation, which
//! is why the daemon does not use its timer loop).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Default cron schedule: 02:00 every day (six fields, seconds first).
pub const DEFAULT_SCHEDULE: &str = "0 0 2 * * *";

/// `t` without its fraction of a second. croner carries the input's sub-second part into
/// the fire times it returns; fire times must be whole seconds so that one stored in the
/// store (millisecond precision) compares equal to the same fire computed again.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A parsed cron expression bound to a timezone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    tz: Tz,
}

/// Why a schedule could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{expression}` is not a valid cron expression ({reason}); use six fields, seconds first, e.g. \"0 0 2 * * *\" for 02:00 daily"
)]
pub struct ScheduleError {
    expression: String,
    reason: String,
}

impl Schedule {
    /// Parse a six-field cron expression for `tz`.
    pub fn parse(expression: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError {
                expression: expression.to_string(),
                reason: e.to_string(),
            })?;
        // A pattern that never fires (e.g. 30 February) is an error too.
        cron.find_next_occurrence(&Utc::now().with_timezone(&tz), false)
            .map_err(|e| ScheduleError {
                expression: expression.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Schedule {
            expression: expression.to_string(),
            cron,
            tz,
        })
    }

    /// A pipeline's `schedule` and `timezone` (the checker is at the pipeline): absent, 02:00
    /// daily in UTC; a bad one is reported and replaced by the default.
    pub fn from_raw(
        expression: Option<String>,
        timezone: Option<String>,
        c: &mut crate::validate::Checker,
    ) -> Schedule {
        let tz_text = timezone.unwrap_or_else(|| "UTC".to_string());
        let tz: Tz = tz_text.parse().unwrap_or_else(|_| {
            c.problem(
                "timezone",
                format!(
                    "`{tz_text}` is not an IANA timezone; use e.g. \"UTC\" or \"Europe/Berlin\""
                ),
            );
            Tz::UTC
        });
        let cron_text = expression.unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
        Schedule::parse(&cron_text, tz).unwrap_or_else(|e| {
            c.problem("schedule", e.to_string());
            Schedule::default_daily(tz)
        })
    }

    /// 02:00 daily in `tz`.
    pub fn default_daily(tz: Tz) -> Schedule {
        match Schedule::parse(DEFAULT_SCHEDULE, tz) {
            Ok(s) => s,
            Err(e) => unreachable!("the default schedule parses: {e}"),
        }
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&whole_seconds(after).with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire time at or before `at`.
    pub fn previous_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_seconds(at).with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The calendar day (YYYY-MM-DD) of `at` in this schedule's timezone: the `{date}` of a
    /// cycle fired at `at`.
    pub fn local_date(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.tz).format("%Y-%m-%d").to_string()
    }

    /// The catch-up rule: if the daemon was down when the schedule last fired, return that
    /// fire time so one cycle runs for it on start. `last_taken` is the fire time of the last
    /// scheduled cycle recorded in the store; `known_since` is when the pipeline was first
    /// registered (nothing is caught up from before the daemon knew the pipeline).
    pub fn missed_run(
        &self,
        now: DateTime<Utc>,
        last_taken: Option<DateTime<Utc>>,
        known_since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let prev = self.previous_at_or_before(now)?;
        if prev <= known_since {
            return None;
        }
        match last_taken {
            Some(taken) if taken >= prev => None,
            _ => Some(prev),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn daily_two_am_in_utc() {
        let s = Schedule::default_daily(Tz::UTC);
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 5, 0)),
            Some(utc(2026, 11, 28, 2, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 1, 0)),
            Some(utc(2026, 11, 27, 2, 0))
        );
    }

    #[test]
    fn stays_at_local_two_am_across_dst() {
        // Europe/Berlin: CET (+1) until 2026-03-29, CEST (+2) after.
        let s = Schedule::parse("0 0 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 3, 26, 12, 0)),
            Some(utc(2026, 3, 27, 1, 0))
        );
        // 2026-03-29 02:00 local does not exist; the next real 02:00 is on the 30th, 00:00 UTC.
        let after_switch = s.next_after(utc(2026, 3, 29, 12, 0)).unwrap();
        assert_eq!(after_switch, utc(2026, 3, 30, 0, 0));
        assert_eq!(s.local_date(after_switch), "2026-03-30");
    }

    #[test]
    fn fire_times_are_whole_seconds() {
        let s = Schedule::default_daily(Tz::UTC);
        let now = utc(2026, 11, 27, 9, 0) + chrono::Duration::nanoseconds(345_650_323);
        assert_eq!(s.previous_at_or_before(now), Some(utc(2026, 11, 27, 2, 0)));
        assert_eq!(s.next_after(now), Some(utc(2026, 11, 28, 2, 0)));
        let at_fire = utc(2026, 11, 27, 2, 0) + chrono::Duration::milliseconds(1);
        assert_eq!(s.next_after(at_fire), Some(utc(2026, 11, 28, 2, 0)));
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in ["every day", "0 0 25 * * *", "* * *", ""] {
            let e = Schedule::parse(bad, Tz::UTC).unwrap_err().to_string();
            assert!(e.contains("six fields"), "{e}");
        }
    }

    #[test]
    fn catches_up_once_for_a_missed_fire() {
        let s = Schedule::default_daily(Tz::UTC);
        let now = utc(2026, 11, 27, 9, 0);
        let known = utc(2026, 11, 20, 0, 0);
        // Down at 02:00 today, last run yesterday: catch up today's 02:00.
        assert_eq!(
            s.missed_run(now, Some(utc(2026, 11, 26, 2, 0)), known),
            Some(utc(2026, 11, 27, 2, 0))
        );
        // Already taken: nothing.
        assert_eq!(
            s.missed_run(now, Some(utc(2026, 11, 27, 2, 0)), known),
            None
        );
        // Pipeline registered after the last fire: nothing to catch up.
        assert_eq!(s.missed_run(now, None, utc(2026, 11, 27, 3, 0)), None);
    }
}
