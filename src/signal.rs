//! Process signals: SIGTERM / SIGINT ask for a drain, SIGHUP asks for a config reload.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::warn;

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Shutdown,
    Reload,
}

/// Listen for signals; each one becomes a [`Request`] on the returned channel.
pub fn listen() -> std::io::Result<mpsc::Receiver<Request>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                _ = term.recv() => Request::Shutdown,
                _ = int.recv() => Request::Shutdown,
                _ = hup.recv() => Request::Reload,
            };
            if tx.send(req).await.is_err() {
                warn!("signal receiver gone");
                return;
            }
        }
    });
    Ok(rx)
}
