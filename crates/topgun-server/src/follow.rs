//! Following a shared store's change feed: the task that keeps this
//! node's Merkle trees, subscribers and live queries current with the
//! writes of other server nodes.

use crate::commit::{CommitError, Committer};
use crate::store::ServerStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Longest pause after a failed read of the feed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts following `store`'s feed from position `from` (taken before the
/// Merkle trees were built, so nothing between is missed; changes read
/// twice are harmless). Returns `None` for a store without a feed. Abort
/// the task to stop it.
pub(crate) fn spawn(
    store: Arc<dyn ServerStore>,
    committer: Committer,
    from: u64,
) -> Option<JoinHandle<()>> {
    store.feed()?;
    Some(tokio::spawn(follow(store, committer, from)))
}

async fn follow(store: Arc<dyn ServerStore>, committer: Committer, mut at: u64) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match committer.read_feed(at).await {
            Ok(next) if next != at => {
                at = next;
                backoff = Duration::from_millis(50);
                continue;
            }
            Ok(_) => backoff = Duration::from_millis(50),
            Err(CommitError::Stopped) => return,
            Err(CommitError::Storage(error)) => {
                tracing::warn!(%error, at, "reading the change feed failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if let Some(feed) = store.feed() {
            feed.wait().await;
        }
    }
}
