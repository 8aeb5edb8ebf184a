//! The change feed on PostgreSQL: appending to it inside a merge, reading
//! it, its doorbell and its retention.
//!
//! **No reader skips a change.** Sequence values are handed out when
//! asked for but become visible at commit, so two writers can commit out
//! of order: a reader that saw 11 and moved its position past 10, while
//! 10 was still uncommitted, would never see 10. Writers therefore take a
//! transaction-scoped advisory lock (`LOCK_FEED`) right before drawing
//! their sequence numbers and hold it until their commit is visible (the
//! lock is released after that), so numbers commit in order: when a
//! reader sees `seq = n`, every smaller number has committed or rolled
//! back. The lock covers only the end of a merge (the record upsert runs
//! before it), and costs one commit at a time across all nodes.
//!
//! **Retention.** Every node, now and then, deletes changes older than
//! the retention (one node at a time, `LOCK_PRUNE`) and raises
//! `topgun_feed.pruned_through` to the highest number deleted, in the
//! same transaction. A read checks `pruned_through` after reading its
//! page: a reader whose position is below it may have missed deleted
//! changes and is told to rebuild ([`FeedRead::Behind`]).

use super::{pg_error, pool_error, record_of, Row, CHANNEL, LOCK_FEED, LOCK_PRUNE};
use crate::store::{ChangeFeed, FeedRead, PostgresOptions};
use deadpool_postgres::{Pool, Transaction};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use topgun_storage::StorageError;

/// Longest wait between two attempts to (re)connect the doorbell.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One node's view of the feed: its origin id (recorded with its changes,
/// to tell which node wrote what), the doorbell, and the listener and
/// retention tasks.
#[derive(Debug)]
pub(super) struct Feed {
    pool: Pool,
    origin: String,
    doorbell: Arc<Notify>,
    poll_interval: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Feed {
    /// Starts the doorbell listener (with `options.notify`) and the
    /// retention task.
    pub(super) fn start(
        pool: Pool,
        config: tokio_postgres::Config,
        origin: String,
        options: &PostgresOptions,
    ) -> Self {
        let doorbell = Arc::new(Notify::new());
        let mut tasks = vec![tokio::spawn(retain(pool.clone(), options.retention))];
        if options.notify {
            tasks.push(tokio::spawn(listen(config, doorbell.clone())));
        }
        Self {
            pool,
            origin,
            doorbell,
            poll_interval: options.poll_interval,
            tasks: Mutex::new(tasks),
        }
    }

    /// This node's id in `topgun_changes.origin` (new at every start).
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// Stops the background tasks.
    pub(super) fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends one change per row, in the caller's transaction, under the
/// feed lock (held until that transaction ends); rings the doorbell at
/// commit when `notify`.
pub(super) async fn append(
    tx: &Transaction<'_>,
    origin: &str,
    rows: &[&Row<'_>],
    notify: bool,
) -> Result<(), StorageError> {
    let during = "appending to the change feed";
    let maps: Vec<&str> = rows.iter().map(|r| r.record.map_name.as_str()).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.record.key.as_str()).collect();
    let millis: Vec<i64> = rows.iter().map(|r| r.millis).collect();
    let counters: Vec<i64> = rows.iter().map(|r| r.counter).collect();
    let nodes: Vec<&str> = rows
        .iter()
        .map(|r| r.record.timestamp.node_id.as_str())
        .collect();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_FEED])
        .await
        .map_err(pg_error(during))?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO topgun_changes (seq, map_name, key, millis, counter, node_id, origin)
             SELECT nextval('topgun_change_seq'), m, k, ms, c, n, $6
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[])
                 AS t(m, k, ms, c, n)",
        )
        .await
        .map_err(pg_error(during))?;
    tx.execute(
        &insert,
        &[&maps, &keys, &millis, &counters, &nodes, &origin],
    )
    .await
    .map_err(pg_error(during))?;
    if notify {
        tx.batch_execute(&format!("NOTIFY {CHANNEL}"))
            .await
            .map_err(pg_error(during))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl ChangeFeed for Feed {
    async fn position(&self) -> Result<u64, StorageError> {
        let during = "reading the change feed's position";
        let client = self.pool.get().await.map_err(pool_error(during))?;
        let row = client
            .query_one(
                "SELECT GREATEST(COALESCE((SELECT max(seq) FROM topgun_changes), 0),
                                 (SELECT pruned_through FROM topgun_feed))",
                &[],
            )
            .await
            .map_err(pg_error(during))?;
        Ok(to_position(row.get(0)))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<FeedRead, StorageError> {
        let during = "reading the change feed";
        let client = self.pool.get().await.map_err(pool_error(during))?;
        let statement = client
            .prepare_cached(
                "SELECT r.key, r.value, r.millis, r.counter, r.node_id, r.ttl_ms,
                        c.seq, r.map_name
                 FROM topgun_changes c
                 JOIN topgun_records r ON r.map_name = c.map_name AND r.key = c.key
                 WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
            )
            .await
            .map_err(pg_error(during))?;
        let from = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&from, &limit])
            .await
            .map_err(pg_error(during))?;
        // After the page: a pruning that committed before the page was
        // read shows here.
        let pruned: i64 = client
            .query_one("SELECT pruned_through FROM topgun_feed", &[])
            .await
            .map_err(pg_error(during))?
            .get(0);
        if to_position(pruned) > after {
            return Ok(FeedRead::Behind {
                position: self.position().await?,
            });
        }
        let mut next = after;
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        // Newest first, so that a key changed twice is sent once.
        for row in rows.iter().rev() {
            next = next.max(to_position(row.get(6)));
            let map: String = row.get(7);
            let record = record_of(&map, row)?;
            if seen.insert((record.map_name.clone(), record.key.clone())) {
                records.push(record);
            }
        }
        records.reverse();
        Ok(FeedRead::Changes { records, next })
    }

    async fn wait(&self) {
        let _ = tokio::time::timeout(self.poll_interval, self.doorbell.notified()).await;
    }
}

fn to_position(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// Keeps a `LISTEN` connection open and rings `doorbell` for every
/// notification (and after each reconnect, in case one was missed).
async fn listen(config: tokio_postgres::Config, doorbell: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let bell = doorbell.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(_))) => bell.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                tracing::warn!(%error, "the change feed's doorbell connection failed");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        doorbell.notify_one();
                        let _ = driver.await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN failed; the change feed is polled");
                        driver.abort();
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot connect the change feed's doorbell; polling");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Deletes changes older than `retention` every so often.
async fn retain(pool: Pool, retention: Duration) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        match prune(&pool, retention).await {
            Ok(Some(through)) => tracing::debug!(through, "change feed pruned"),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "pruning the change feed failed"),
        }
    }
}

/// One retention pass: `Some(pruned_through)` when this node held the
/// prune lock, `None` when another node was pruning.
pub(super) async fn prune(pool: &Pool, retention: Duration) -> Result<Option<u64>, StorageError> {
    let during = "pruning the change feed";
    let mut client = pool.get().await.map_err(pool_error(during))?;
    let tx = client.transaction().await.map_err(pg_error(during))?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_PRUNE])
        .await
        .map_err(pg_error(during))?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let row = tx
        .query_one(
            "WITH gone AS (
                 DELETE FROM topgun_changes
                 WHERE at < clock_timestamp() - make_interval(secs => $1)
                 RETURNING seq)
             UPDATE topgun_feed
             SET pruned_through = GREATEST(pruned_through, COALESCE((SELECT max(seq) FROM gone), 0))
             RETURNING pruned_through",
            &[&retention.as_secs_f64()],
        )
        .await
        .map_err(pg_error(during))?;
    tx.commit().await.map_err(pg_error(during))?;
    Ok(Some(to_position(row.get(0))))
}
