//! Time as the engine sees it: what time it is, and how a task waits. The daemon uses the
//! [`SystemClock`] (wall time, tokio's timers); the simulator ([`crate::sim`]) uses a
//! [`SimClock`], whose time moves only when every task of the engine is parked on it, so a
//! year runs in a second and a seed replays exactly.
//!
//! Every `now` of the engine, its scheduler and its steps comes from here; a task that waits
//! for time to pass waits here. Work that takes real time (a query, a blocking job) does not
//! park its task, so simulated time never passes while the engine is busy.
//!
//! This module must not know about the store, the engine or any policy.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::{Notify, oneshot};

/// A boxed future the clock hands out.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The source of time and of waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Park the calling task for `d`. A `wakeable` sleep also ends at [`Clock::wake`].
    fn sleep(&self, d: Duration, wakeable: bool) -> BoxFuture<'static, ()>;

    /// A timer around work that runs meanwhile (a training timeout): it fires after `d`
    /// but does not count its task as parked.
    fn timer(&self, d: Duration) -> BoxFuture<'static, ()>;

    /// End every wakeable sleep now (a decision arrived, the champion moved).
    fn wake(&self);

    /// The longest a polling loop should sleep before looking again, given the slice it
    /// uses on the wall clock (`real`): the wall clock can jump (a suspend, an NTP step) and
    /// another daemon can write the store unseen; in a simulation neither happens, and a
    /// loop sleeps until its next due time or a wake.
    fn slice(&self, real: Duration) -> Duration;

    /// Count a task that parks on this clock until the returned guard is dropped (the
    /// simulator moves time only when every such task is parked).
    fn task(&self) -> TaskGuard;
}

/// Held by a task that takes part in a [`SimClock`]'s quiescence; nothing on the system
/// clock.
pub struct TaskGuard {
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// Wall time and tokio's timers.
#[derive(Default)]
pub struct SystemClock {
    wake: Arc<Notify>,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, d: Duration, wakeable: bool) -> BoxFuture<'static, ()> {
        if !wakeable {
            return Box::pin(tokio::time::sleep(d));
        }
        // Registered now, before the caller looks at what it waits for, so a wake in
        // between is not lost.
        let mut notified = Box::pin(self.wake.clone().notified_owned());
        notified.as_mut().enable();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = notified => {}
            }
        })
    }

    fn timer(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn wake(&self) {
        self.wake.notify_waiters();
    }

    fn slice(&self, real: Duration) -> Duration {
        real
    }

    fn task(&self) -> TaskGuard {
        TaskGuard { on_drop: None }
    }
}

/// Simulated time: starts at a given instant and moves only through [`SimClock::advance_to`].
#[derive(Clone)]
pub struct SimClock {
    inner: Arc<SimInner>,
}

struct SimInner {
    state: Mutex<SimState>,
    /// Signalled whenever a task parks, wakes or ends.
    changed: Notify,
}

struct SimState {
    now: DateTime<Utc>,
    seq: u64,
    sleepers: BTreeMap<(DateTime<Utc>, u64), Sleeper>,
    tasks: usize,
}

struct Sleeper {
    tx: oneshot::Sender<()>,
    wakeable: bool,
    parks: bool,
}

impl SimClock {
    pub fn new(start: DateTime<Utc>) -> SimClock {
        SimClock {
            inner: Arc::new(SimInner {
                state: Mutex::new(SimState {
                    now: start,
                    seq: 0,
                    sleepers: BTreeMap::new(),
                    tasks: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, d: Duration, wakeable: bool, parks: bool) -> SimSleep {
        let (tx, rx) = oneshot::channel();
        let mut s = self.state();
        s.seq += 1;
        let at = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| s.now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let key = (at, s.seq);
        s.sleepers.insert(
            key,
            Sleeper {
                tx,
                wakeable,
                parks,
            },
        );
        drop(s);
        self.inner.changed.notify_waiters();
        SimSleep {
            rx,
            clock: self.inner.clone(),
        }
    }

    /// Whether every counted task is parked (none is doing work).
    pub fn settled(&self) -> bool {
        let mut s = self.state();
        s.sleepers.retain(|_, sl| !sl.tx.is_closed());
        let parked = s.sleepers.values().filter(|sl| sl.parks).count();
        parked >= s.tasks
    }

    /// Wait until every counted task is parked.
    pub async fn wait_settled(&self) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.settled() {
                return;
            }
            notified.await;
        }
    }

    /// When the next sleep or timer ends.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        let mut s = self.state();
        s.sleepers.retain(|_, sl| !sl.tx.is_closed());
        s.sleepers.keys().next().map(|(at, _)| *at)
    }

    /// Move time to `to` (never backwards) and end every sleep due by then.
    pub fn advance_to(&self, to: DateTime<Utc>) {
        let mut s = self.state();
        if to > s.now {
            s.now = to;
        }
        let now = s.now;
        let later = s.sleepers.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut s.sleepers, later);
        drop(s);
        for (_, sl) in due {
            let _ = sl.tx.send(());
        }
    }

    /// The number of counted tasks alive.
    pub fn tasks(&self) -> usize {
        self.state().tasks
    }
}

/// A sleep on the simulated clock; dropping it (a `select!` that took another branch, an
/// aborted task) un-parks its task.
struct SimSleep {
    rx: oneshot::Receiver<()>,
    clock: Arc<SimInner>,
}

impl Future for SimSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        self.rx.close();
        self.clock.changed.notify_waiters();
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.state().now
    }

    fn sleep(&self, d: Duration, wakeable: bool) -> BoxFuture<'static, ()> {
        Box::pin(self.register(d, wakeable, true))
    }

    fn timer(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(self.register(d, false, false))
    }

    fn wake(&self) {
        let mut s = self.state();
        let keys: Vec<_> = s
            .sleepers
            .iter()
            .filter(|(_, sl)| sl.wakeable)
            .map(|(k, _)| *k)
            .collect();
        let woken: Vec<Sleeper> = keys.iter().filter_map(|k| s.sleepers.remove(k)).collect();
        drop(s);
        for sl in woken {
            let _ = sl.tx.send(());
        }
    }

    fn slice(&self, _real: Duration) -> Duration {
        Duration::MAX
    }

    fn task(&self) -> TaskGuard {
        self.state().tasks += 1;
        let inner = self.inner.clone();
        TaskGuard {
            on_drop: Some(Box::new(move || {
                let mut s = inner
                    .state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                s.tasks = s.tasks.saturating_sub(1);
                drop(s);
                inner.changed.notify_waiters();
            })),
        }
    }
}
