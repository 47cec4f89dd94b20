//! Console sessions: a login exchanges the API token for a random session id kept in an
//! HttpOnly, SameSite=Strict cookie (Secure when people reach the daemon over TLS), each
//! session with its own CSRF token that every form posts back; failed logins are counted per
//! client address and a client past the limit is refused for the rest of the window, right
//! token or not. Sessions live in memory: a restart logs everyone out.
//!
//! This module holds no secret other than the ids it minted (the API token is compared by
//! the caller) and does no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secret::constant_time_eq;

/// The session cookie's name.
pub const COOKIE: &str = "retraind_session";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins one client may make per window before it is refused.
pub const MAX_FAILURES: u32 = 5;
/// The window failed logins are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions held at once; the oldest goes when a login would pass it.
const MAX_SESSIONS: usize = 10_000;

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    /// The name they gave at login: recorded as the approver or actor of what they do.
    pub user: String,
    /// The token every form of this session posts back.
    pub csrf: String,
    expires: Instant,
}

/// Failed logins of one client in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Every session and every client's failed logins.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// Why a login is refused before its token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the client may try again.
    pub retry_after: u64,
}

/// A new random token: 32 bytes from the OS-seeded generator, as hex.
fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Whether `client` may try a login now.
    pub fn may_try(&self, client: IpAddr, now: Instant) -> Result<(), Throttled> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&client) {
            Some(f) if f.count >= MAX_FAILURES && now < f.since + FAILURE_WINDOW => {
                Err(Throttled {
                    retry_after: ((f.since + FAILURE_WINDOW - now).as_secs_f64().ceil() as u64)
                        .max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Count a failed login of `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, f| now < f.since + FAILURE_WINDOW);
        let f = failures.entry(client).or_insert(Failures {
            count: 0,
            since: now,
        });
        f.count += 1;
    }

    /// Open a session for `user`; returns its id (the cookie's value).
    pub fn open(&self, user: &str, now: Instant) -> (String, Session) {
        let id = token();
        let session = Session {
            user: user.to_string(),
            csrf: token(),
            expires: now + SESSION_TTL,
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| now < s.expires);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session with id `id`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id).filter(|s| now < s.expires).cloned()
    }

    /// End a session.
    pub fn close(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), presented.as_bytes())
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that carries session `id` (`None` clears the cookie).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_the_failure_limit_is_refused_until_the_window_ends() {
        let s = Sessions::default();
        let ip: IpAddr = [10, 0, 0, 7].into();
        let other: IpAddr = [10, 0, 0, 8].into();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.may_try(ip, t0), Ok(()));
            s.failed(ip, t0);
        }
        assert_eq!(s.may_try(ip, t0), Err(Throttled { retry_after: 900 }));
        assert_eq!(s.may_try(other, t0), Ok(()));
        assert_eq!(s.may_try(ip, t0 + FAILURE_WINDOW), Ok(()));
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.open("ada", t0);
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        assert_eq!(s.get(&id, t0).map(|s| s.user), Some("ada".to_string()));
        assert!(s.get(&id, t0 + SESSION_TTL).is_none());
        s.close(&id);
        assert!(s.get(&id, t0).is_none());
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        assert_eq!(
            set_cookie(Some("abc"), true),
            "retraind_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert_eq!(
            cookie_value("theme=dark; retraind_session=abc; x=1"),
            Some("abc")
        );
        assert_eq!(cookie_value("retraind_sessionx=abc"), None);
    }
}
