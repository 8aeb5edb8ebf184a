//! Syncing with a server for one command (`--server`): reporting sync
//! events on stderr and waiting, within `--timeout`, until the client is
//! `ONLINE` with nothing pending.

use crate::error::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use topgun_client::{SyncEvent, TopGunClient};

/// How often the progress indicator is refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(100);

/// The server a command syncs with, and the command's deadline.
#[derive(Debug)]
pub(crate) struct Remote {
    url: String,
    timeout: Duration,
    deadline: Instant,
    /// `Some(reason)` once the server refused the token.
    auth_failure: watch::Receiver<Option<String>>,
    /// Why the last connection closed (or failed to open).
    last_error: Arc<Mutex<Option<String>>>,
}

impl Remote {
    /// Starts reporting `client`'s sync events on stderr; the command's
    /// waits end `timeout` from now.
    ///
    /// Call it right after the client is built, before anything yields to
    /// the runtime, so no event is missed.
    pub(crate) fn start(
        client: &TopGunClient,
        url: String,
        timeout: Duration,
        verbose: bool,
    ) -> Self {
        let (auth_tx, auth_failure) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        tokio::spawn(report_events(
            client.sync_events(),
            auth_tx,
            last_error.clone(),
            verbose,
        ));
        Self {
            url,
            timeout,
            deadline: Instant::now() + timeout,
            auth_failure,
            last_error,
        }
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Waits until `client` is `ONLINE` with no pending op.
    ///
    /// With `progress`, a spinner on stderr shows the traffic and the
    /// pending ops every 100 ms while it waits.
    ///
    /// # Errors
    /// [`CliError::AuthFailed`] as soon as the server refuses the token
    /// (the client would retry only at its longest backoff);
    /// [`CliError::NotSynced`] when the deadline passes first; storage
    /// errors reading the op log.
    pub(crate) async fn wait_synced(
        &self,
        client: &TopGunClient,
        progress: Option<&ProgressBar>,
    ) -> Result<(), CliError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let synced = client.wait_until_synced(remaining);
        tokio::pin!(synced);
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        let synced = loop {
            tokio::select! {
                synced = &mut synced => break synced?,
                reason = self.auth_failed() => {
                    return Err(CliError::AuthFailed { url: self.url.clone(), reason });
                }
                _ = tick.tick(), if progress.is_some() => {
                    if let Some(bar) = progress {
                        show_progress(bar, client).await;
                    }
                }
            }
        };
        if synced {
            return Ok(());
        }
        Err(CliError::NotSynced {
            url: self.url.clone(),
            waited: self.timeout,
            state: client.state().as_str(),
            pending: client.pending_ops().await?,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        })
    }

    /// Resolves with the server's reason once it refused the token; never
    /// otherwise.
    pub(crate) async fn auth_failed(&self) -> String {
        let mut rx = self.auth_failure.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // The reporter is gone: no failure will be reported any more.
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }
}

/// A spinner on stderr for [`Remote::wait_synced`].
pub(crate) fn spinner(url: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    // The template is a constant; fall back to the default style if it
    // ever stops parsing.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}") {
        bar.set_style(style);
    }
    bar.set_prefix(format!("syncing with {url}"));
    bar.enable_steady_tick(PROGRESS_TICK);
    bar
}

async fn show_progress(bar: &ProgressBar, client: &TopGunClient) {
    let traffic = client.traffic();
    let pending = match client.pending_ops().await {
        Ok(n) => n.to_string(),
        Err(_) => "?".to_owned(),
    };
    bar.set_message(format!(
        "{}: received {} frames ({}), sent {} frames ({}), {pending} ops pending",
        client.state(),
        traffic.frames_received,
        indicatif::HumanBytes(traffic.bytes_received),
        traffic.frames_sent,
        indicatif::HumanBytes(traffic.bytes_sent),
    ));
}

/// Prints what the user must know on stderr: refused tokens and ops,
/// server errors, local storage failures; with `--verbose` also
/// disconnections and protocol errors. Remembers the last disconnection
/// reason and signals an auth failure.
async fn report_events(
    mut events: broadcast::Receiver<SyncEvent>,
    auth_failure: watch::Sender<Option<String>>,
    last_error: Arc<Mutex<Option<String>>>,
    verbose: bool,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("warning: {n} sync events were dropped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match event {
            SyncEvent::AuthFailed(reason) => {
                eprintln!("error: the server refused authentication: {reason}");
                auth_failure.send_replace(Some(reason));
            }
            SyncEvent::OpRejected {
                op_id,
                reason,
                code,
            } => {
                let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
                eprintln!(
                    "error: the server rejected op {op_id}{code}: {reason}; \
                     it will not be sent again"
                );
            }
            SyncEvent::ServerError { code, message } => {
                eprintln!("warning: server error {code}: {message}");
            }
            SyncEvent::LocalError(what) => eprintln!("warning: sync: {what}"),
            SyncEvent::Disconnected(reason) => {
                if verbose {
                    eprintln!("disconnected: {reason}");
                }
                *last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
            SyncEvent::ProtocolError(what) if verbose => eprintln!("protocol error: {what}"),
            SyncEvent::PullComplete(map) if verbose => eprintln!("pulled map {map}"),
            _ => {}
        }
    }
}
