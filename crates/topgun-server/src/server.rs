//! Starting and stopping the server: the store, the Merkle trees, the
//! commit task, the HTTP routes (`/ws`, `/health`) and graceful shutdown.

use crate::auth::JwtVerifier;
use crate::commit::{self, Committer};
use crate::config::{AuthMode, ServerConfig, StoreConfig};
use crate::connection;
use crate::error::ServerError;
use crate::fanout::Hub;
use crate::merkle_index::MerkleIndex;
use crate::shared::Shared;
use crate::store::{EmbeddedStore, ServerStore};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use topgun_core::hlc::DriftPolicy;
use topgun_core::wire::Codec;
use topgun_core::Hlc;

/// What the HTTP handlers need.
#[derive(Clone, Debug)]
struct App {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Each connection holds a clone; all dropped = all connections done.
    done: mpsc::Sender<()>,
}

/// Runs a server on `listener` until `shutdown` resolves, then shuts down
/// gracefully: stops accepting connections, lets every connection finish
/// the batches it has received (applied and acknowledged), closes each
/// with a close frame (1001, "server shutting down"), waits for them (at
/// most [`crate::Limits::shutdown_grace`]) and closes the store it opened.
///
/// Serves the WebSocket protocol at `/ws` (one MessagePack message per
/// binary frame) and `GET /health` (200, `{"status":"ok", …}`). Bind the
/// listener to port 0 in tests and read its address before passing it.
/// Opening a [`StoreConfig::DataDir`] store blocks on file I/O.
///
/// # Errors
/// A [`ServerError`] if the store cannot be opened or read, the
/// configuration is invalid (JWT secret, node id), or the listener fails.
/// Errors of single connections are answered on the wire and logged, never
/// returned.
pub async fn run<F>(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listener { source })?;
    let jwt = match &config.auth {
        AuthMode::Disabled => None,
        AuthMode::Jwt { secret } if secret.is_empty() => return Err(ServerError::MissingJwtSecret),
        AuthMode::Jwt { secret } => Some(JwtVerifier::new(secret)),
    };
    let hlc = Hlc::new(config.node_id.clone())
        .map_err(|source| ServerError::NodeId { source })?
        .with_drift(config.max_drift_ms, DriftPolicy::Strict);
    let store = open_store(config.store, config.lanes).await?;
    let result = serve(
        listener,
        store.clone(),
        hlc,
        jwt,
        Policy {
            rules: config.rules,
            limits: config.limits,
            web_root: config.web_root,
            ready: config.ready,
        },
        shutdown,
    )
    .await;
    let closed = store
        .close()
        .await
        .map_err(|source| ServerError::CloseStore { source });
    tracing::info!(%local_addr, "topgun server stopped");
    result.and(closed)
}

/// What the server enforces and serves besides the protocol.
struct Policy {
    rules: crate::AccessRules,
    limits: crate::Limits,
    web_root: Option<std::path::PathBuf>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve<F>(
    listener: TcpListener,
    store: Arc<dyn ServerStore>,
    hlc: Hlc,
    jwt: Option<JwtVerifier>,
    policy: Policy,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let Policy {
        rules,
        limits,
        web_root,
        ready,
    } = policy;
    let started = std::time::Instant::now();
    // Before the trees are built: changes committed meanwhile are read
    // again from the feed (harmless) rather than missed.
    let feed_from = match store.feed() {
        Some(feed) => feed
            .position()
            .await
            .map_err(|source| ServerError::LoadStore { source })?,
        None => 0,
    };
    let merkle = Arc::new(
        MerkleIndex::load(store.clone())
            .await
            .map_err(|source| ServerError::LoadStore { source })?,
    );
    tracing::info!(
        maps = merkle.map_count(),
        ms = started.elapsed().as_millis(),
        "merkle trees built"
    );
    let hub = Arc::new(Hub::default());
    let context = commit::Context {
        clock: hlc.clock().clone(),
        codec: Codec::new().with_max_frame_len(limits.max_frame_len),
    };
    let (committer, commit_task) =
        Committer::spawn(store.clone(), merkle.clone(), hub.clone(), context);
    let follower = crate::follow::spawn(store.clone(), committer.clone(), feed_from);
    let grace = limits.shutdown_grace;
    let shared = Arc::new(Shared::new(
        store, merkle, hub, committer, hlc, jwt, rules, limits,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ws", get(upgrade))
        .with_state(App {
            shared: shared.clone(),
            stop: stop_rx,
            done: done_tx,
        });
    if let Some(root) = web_root {
        tracing::info!(root = %root.display(), "serving static files");
        app = app.fallback_service(tower_http::services::ServeDir::new(root));
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "topgun server listening");
    }
    if let Some(ready) = ready {
        // Nobody waiting is fine.
        let _ = ready.send(());
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        })
        .await;
    // The listener is closed; wait for the WebSocket connections, which
    // finish their batches and close themselves.
    if tokio::time::timeout(grace + Duration::from_secs(1), done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.open_connections(),
            "connections still open after the shutdown grace period"
        );
    }
    drop(shared);
    if let Some(follower) = follower {
        follower.abort();
        let _ = follower.await;
    }
    // The commit task ends once the last connection dropped its handle.
    let mut commit_task = commit_task;
    if tokio::time::timeout(grace, &mut commit_task).await.is_err() {
        // Its unanswered batches get no ack; clients resend them.
        tracing::warn!("the commit task did not stop in time; stopping it");
        commit_task.abort();
        let _ = commit_task.await;
    }
    served.map_err(|source| ServerError::Listener { source })
}

async fn health(State(app): State<App>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "connections": app.shared.open_connections(),
        "maps": app.shared.merkle.map_count(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    if *app.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    let max = app.shared.limits.max_message_len;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| connection::serve(socket, app.shared, app.stop, app.done))
}

/// Opens the store `config` names.
async fn open_store(
    config: StoreConfig,
    lanes: usize,
) -> Result<Arc<dyn ServerStore>, ServerError> {
    match config {
        #[cfg(feature = "redb")]
        StoreConfig::DataDir(dir) => crate::store::open_data_dir(&dir, lanes),
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(options) => {
            let store = crate::store::PostgresStore::connect(options)
                .await
                .map_err(|source| ServerError::Postgres { source })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Store(store) => Ok(Arc::new(EmbeddedStore::new(store))),
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the usual `shutdown`
/// argument of [`run`] for a command-line server. The handlers are
/// installed when this is called (inside a tokio runtime), so call it
/// before announcing that the server is up.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Register the handlers now, not when the future is first polled: a
    // signal that arrives in between would otherwise kill the process with
    // the default action instead of shutting down gracefully.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(%error, "cannot listen for SIGINT/SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
