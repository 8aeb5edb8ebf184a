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

use super::{pg_error, record_of, timestamp_of, Stamps, CHANNEL, LOCK_FEED, LOCK_PRUNE};
use crate::store::{ChangeFeed, FeedRead, PostgresOptions};
use deadpool_postgres::{Pool, Transaction};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use topgun_storage::{KeyStamp, StorageError, StoreRecord};

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
    /// This node's changes whose commit it saw succeed, not yet read past:
    /// reading the feed skips them (their records are in its view).
    own: Mutex<BTreeSet<i64>>,
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
            tasks.push(tokio::spawn(listen(
                config,
                doorbell.clone(),
                origin.clone(),
            )));
        }
        Self {
            pool,
            origin,
            doorbell,
            own: Mutex::new(BTreeSet::new()),
            poll_interval: options.poll_interval,
            tasks: Mutex::new(tasks),
        }
    }

    /// This node's id in `topgun_changes.origin` (new at every start).
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// Notes that this node's change `seq` committed (its confirmation
    /// arrived), so reading the feed can skip it.
    pub(super) fn confirmed(&self, seq: i64) {
        self.own_seqs().insert(seq);
    }

    fn own_seqs(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.own.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Appends the change of a commit (the stamps it applied), in the caller's
/// transaction, under the feed lock (held until that transaction ends);
/// rings the doorbell at commit when `notify`, naming this node. Returns
/// the change's sequence number.
pub(super) async fn append(
    tx: &Transaction<'_>,
    origin: &str,
    changed: &Stamps<'_>,
    notify: bool,
) -> Result<i64, StorageError> {
    let during = "appending to the change feed";
    // Prepared first (cached), then pipelined: the three run in the order
    // they are sent, in one round trip.
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await
        .map_err(pg_error(during))?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO topgun_changes (seq, origin, map_names, keys, millis, counters, node_ids)
             VALUES (nextval('topgun_change_seq'), $1, $2, $3, $4, $5, $6)
             RETURNING seq",
        )
        .await
        .map_err(pg_error(during))?;
    let ring = tx
        .prepare_cached("SELECT pg_notify($1, $2)")
        .await
        .map_err(pg_error(during))?;
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&LOCK_FEED];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &origin,
        &changed.maps,
        &changed.keys,
        &changed.millis,
        &changed.counters,
        &changed.nodes,
    ];
    let ring_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&CHANNEL, &origin];
    let lock = tx.execute(&lock, &lock_params);
    let insert = tx.query_one(&insert, &params);
    let bell = async {
        if notify {
            tx.execute(&ring, &ring_params).await.map(drop)
        } else {
            Ok(())
        }
    };
    let (locked, inserted, rang) = tokio::join!(lock, insert, bell);
    locked.map_err(pg_error(during))?;
    let seq = inserted.map_err(pg_error(during))?.get(0);
    rang.map_err(pg_error(during))?;
    Ok(seq)
}

#[async_trait::async_trait]
impl ChangeFeed for Feed {
    async fn position(&self) -> Result<u64, StorageError> {
        let during = "reading the change feed's position";
        let client = self.pool.get().await.map_err(pg_error(during))?;
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
        let client = self.pool.get().await.map_err(pg_error(during))?;
        let statement = client
            .prepare_cached(
                "SELECT seq, origin, map_names, keys, millis, counters, node_ids
                 FROM topgun_changes WHERE seq > $1 AND seq <> ALL($3)
                 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(pg_error(during))?;
        let from = i64::try_from(after).unwrap_or(i64::MAX);
        // Committed before the page is read, so visible to it.
        let skipped: Vec<i64> = self.own_seqs().range(from + 1..).copied().collect();
        let page = limit.max(1);
        let limit = i64::try_from(page).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&from, &limit, &skipped])
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
        let mut own = Vec::new();
        let mut others: Vec<(String, String)> = Vec::new();
        for row in &rows {
            next = next.max(to_position(row.get(0)));
            let origin: &str = row.get(1);
            let maps: Vec<String> = row.get(2);
            let keys: Vec<String> = row.get(3);
            if origin != self.origin {
                others.extend(maps.into_iter().zip(keys));
                continue;
            }
            let millis: Vec<i64> = row.get(4);
            let counters: Vec<i64> = row.get(5);
            let nodes: Vec<String> = row.get(6);
            for ((((map, key), millis), counter), node) in maps
                .into_iter()
                .zip(keys)
                .zip(millis)
                .zip(counters)
                .zip(nodes)
            {
                let timestamp = timestamp_of(millis, counter, node)?;
                own.push((map, KeyStamp { key, timestamp }));
            }
        }
        if rows.len() < page {
            // Every change after `after` but the skipped ones is in the
            // page: the skipped ones are read past too (numbers commit in
            // order, so nothing below them is still to come).
            if let Some(last) = skipped.last() {
                next = next.max(to_position(*last));
            }
        }
        let read_past = i64::try_from(next).unwrap_or(i64::MAX);
        self.own_seqs().retain(|seq| *seq > read_past);
        let records = current_records(&client, others).await?;
        Ok(FeedRead::Changes { records, own, next })
    }

    async fn wait(&self) {
        let _ = tokio::time::timeout(self.poll_interval, self.doorbell.notified()).await;
    }
}

/// The records now stored under `keys` (map, key), each once, in the
/// order of their first mention.
async fn current_records(
    client: &deadpool_postgres::Object,
    keys: Vec<(String, String)>,
) -> Result<Vec<StoreRecord>, StorageError> {
    let during = "reading the change feed's records";
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let keys: Vec<(String, String)> = keys
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect();
    let maps: Vec<&str> = keys.iter().map(|(m, _)| m.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let statement = client
        .prepare_cached(
            "SELECT r.key, r.value, r.millis, r.counter, r.node_id, r.ttl_ms, r.map_name, u.n
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(map_name, key, n)
             JOIN topgun_records r ON r.map_name = u.map_name AND r.key = u.key
             ORDER BY u.n",
        )
        .await
        .map_err(pg_error(during))?;
    let rows = client
        .query(&statement, &[&maps, &names])
        .await
        .map_err(pg_error(during))?;
    rows.iter()
        .map(|row| {
            let map: String = row.get(6);
            record_of(&map, row)
        })
        .collect()
}

fn to_position(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// Keeps a `LISTEN` connection open and rings `doorbell` for every
/// notification of another node than `origin` (and after each reconnect,
/// in case one was missed).
async fn listen(config: tokio_postgres::Config, doorbell: Arc<Notify>, origin: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let bell = doorbell.clone();
                let me = origin.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            // This node's own commits need no reading.
                            Some(Ok(AsyncMessage::Notification(n))) if n.payload() == me => {}
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
    let mut client = pool.get().await.map_err(pg_error(during))?;
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
