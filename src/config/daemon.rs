//! `[daemon]`: where state lives, how long a shutdown may take, and this daemon's name and
//! lease in a high-availability pair — raw shape, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::retention::{RawRetention, RetentionConfig};
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[daemon]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDaemon {
    pub state_dir: Option<String>,
    pub shutdown_grace: Option<String>,
    pub instance: Option<String>,
    pub lease_ttl: Option<String>,
    pub store_retry_for: Option<String>,
    #[serde(default)]
    pub retention: RawRetention,
}

/// The daemon's own settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub shutdown_grace: Duration,
    /// This daemon's name in the leader lease and `retraind_leader{instance}`.
    pub instance: String,
    /// How long a leader's lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// How long a step keeps retrying a store that is unreachable or busy before its cycle
    /// fails "store unavailable".
    pub store_retry_for: Duration,
    /// What the state directory keeps (`[daemon.retention]`).
    pub retention: RetentionConfig,
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const LEASE_TTL: Duration = Duration::from_secs(15);
const STORE_RETRY_FOR: Duration = Duration::from_secs(300);

impl DaemonConfig {
    /// Validate `raw` (the checker is at `daemon`). The state directory defaults to
    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `state` beside the config file.
    pub fn from_raw(raw: RawDaemon, files: Files, c: &mut Checker) -> DaemonConfig {
        let state_dir = raw
            .state_dir
            .map(|s| files.resolve(&s))
            .or_else(|| (files.env)("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| files.base.join("state"));
        let lease_ttl = c.duration("lease_ttl", &raw.lease_ttl, LEASE_TTL);
        if lease_ttl < Duration::from_secs(1) {
            c.problem(
                "lease_ttl",
                "must be at least 1s (default 15s: a standby takes over within about 20s)",
            );
        }
        let store_retry_for = c.duration("store_retry_for", &raw.store_retry_for, STORE_RETRY_FOR);
        if store_retry_for < Duration::from_secs(1) {
            c.problem(
                "store_retry_for",
                "must be at least 1s (default 5m: a database restart or failover fits in it)",
            );
        }
        let retention = RetentionConfig::from_raw(raw.retention, &mut c.section("retention"));
        DaemonConfig {
            state_dir,
            store_retry_for,
            retention,
            shutdown_grace: c.duration("shutdown_grace", &raw.shutdown_grace, SHUTDOWN_GRACE),
            instance: raw.instance.unwrap_or_else(host_name),
            lease_ttl,
        }
    }
}

/// The host name: stable across restarts, so a daemon restarted after a crash takes its own
/// lease back at once. Two daemons on one host need distinct `daemon.instance` names.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
