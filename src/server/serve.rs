//! The connection loop: HTTP/1.1 with bounds, so that slow or many clients cannot starve
//! the daemon. A client has [`HEADER_READ_TIMEOUT`] to send its request head (a slowloris
//! connection is closed), a request has [`REQUEST_TIMEOUT`] to be answered, body included
//! (then 503), at most [`MAX_CONNECTIONS`] connections are open (the next waits in the
//! kernel's backlog) and at most [`MAX_READS`] requests that read the store run at once (the
//! others wait their turn; `/metrics`, `/healthz` and `/readyz` never wait). The engine's
//! writes and the leader lease have connections of their own in the store's pools, so
//! readers can only slow each other. Shutdown stops accepting, lets requests in flight
//! finish, then closes every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// How long a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take from its head to its answer, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests reading the store at once.
pub const MAX_READS: usize = 64;

/// Serve `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reads = Arc::new(Semaphore::new(MAX_READS));
    let tracker = TaskTracker::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the peer left before the accept: wait a
                    // moment rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (app, reads, stopped) = (app.clone(), reads.clone(), stopped.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                handle(app.clone(), reads.clone(), peer, req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = until_stopped(stopped) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Wait until the server stops (or is gone).
async fn until_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stopped.borrow_and_update() {
            return;
        }
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// Answer one request within [`REQUEST_TIMEOUT`], taking a read slot unless it only reads
/// the process's own state.
async fn handle(
    app: Router,
    reads: Arc<Semaphore>,
    peer: SocketAddr,
    mut req: hyper::Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use tower_service::Service;
    req.extensions_mut().insert(ConnectInfo(peer));
    let own_state = matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
    let answer = async move {
        let _slot = match own_state {
            true => None,
            false => reads.acquire_owned().await.ok(),
        };
        let mut app = app;
        app.call(req.map(axum::body::Body::new)).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(never)) => match never {},
        Err(_) => Ok((
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {}s; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
            .into_response()),
    }
}
