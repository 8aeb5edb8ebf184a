//! [`PostgresStore`]: the server store on PostgreSQL, shared by several
//! server nodes (feature `postgres`).
//!
//! - **Records** live in `topgun_records`; the LWW rule is enforced in SQL:
//!   a batch is one multi-row upsert whose update applies only when the
//!   incoming `(millis, counter, node_id)` is greater than the stored one.
//! - **Change feed**: the same transaction appends one row per applied
//!   write to `topgun_changes`, numbered from a sequence while holding a
//!   transaction-scoped advisory lock, so sequence numbers commit in
//!   order and a reader of `seq > last_seen` can never skip one that
//!   commits later (see [`feed`]). `NOTIFY topgun_changes` rings the
//!   readers' doorbell at commit; they also poll.
//! - **Schema** migrations run at start under an advisory lock
//!   ([`schema`]).

mod feed;
mod schema;

use super::{ChangeFeed, ServerStore};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use feed::Feed;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;
use topgun_core::Timestamp;
use topgun_storage::{KeyStamp, Paged, StorageError, StoreRecord};

/// Advisory lock ids (`pg_advisory_*`), fixed for this schema.
const LOCK_MIGRATE: i64 = 0x7470_6775_6e00_0001;
const LOCK_FEED: i64 = 0x7470_6775_6e00_0002;
const LOCK_PRUNE: i64 = 0x7470_6775_6e00_0003;
/// Longest map name and key together, in bytes: a B-tree entry must fit
/// in a third of a page.
const MAX_KEY_BYTES: usize = 2_000;
/// The `LISTEN` / `NOTIFY` channel of the change feed's doorbell.
const CHANNEL: &str = "topgun_changes";

/// How to reach and use a PostgreSQL store.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// A libpq connection URL, `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// (key-value strings work too).
    pub url: String,
    /// Most pooled connections (default 16).
    pub pool_size: usize,
    /// How long changes stay in the feed (default 24 h). A node that was
    /// away longer rebuilds its view from the records.
    pub retention: Duration,
    /// How often a node reads the feed when no doorbell rang (default
    /// 100 ms); the doorbell (`LISTEN`/`NOTIFY`) usually comes first.
    pub poll_interval: Duration,
    /// Whether writers ring the doorbell with `NOTIFY` and readers
    /// `LISTEN` (default `true`; turn it off on PostgreSQL-compatible
    /// engines without `NOTIFY`, where polling alone delivers changes).
    pub notify: bool,
}

impl PostgresOptions {
    /// The defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            retention: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_millis(100),
            notify: true,
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("retention", &self.retention)
            .field("poll_interval", &self.poll_interval)
            .field("notify", &self.notify)
            .finish()
    }
}

/// A [`ServerStore`] on PostgreSQL that several nodes share; each node
/// reads the others' writes from its [`ChangeFeed`].
#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    feed: Feed,
    notify: bool,
}

impl PostgresStore {
    /// Connects (checking the URL, the server, the credentials and the
    /// database now), migrates the schema, and starts the feed's doorbell
    /// listener and retention.
    ///
    /// # Errors
    /// A [`StorageError::Backend`] that says what failed (a malformed
    /// URL, a server that cannot be reached, a missing database, wrong
    /// credentials), or [`StorageError::SchemaTooNew`].
    pub async fn connect(options: PostgresOptions) -> Result<Self, StorageError> {
        let mut config = tokio_postgres::Config::from_str(&options.url)
            .map_err(pg_error("parsing the connection URL"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A node that stalls or vanishes mid-transaction (holding the feed
        // lock) is cut off by the server, and dead peers are noticed.
        config
            .options("-c idle_in_transaction_session_timeout=10000")
            .keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|source| StorageError::Backend {
                backend: "postgres",
                during: "creating the connection pool",
                source: Box::new(source),
            })?;
        let mut client = pool.get().await.map_err(pg_error("connecting"))?;
        schema::migrate(&mut client).await?;
        drop(client);
        let origin = uuid::Uuid::new_v4().to_string();
        let feed = Feed::start(pool.clone(), config, origin, &options);
        Ok(Self {
            pool,
            feed,
            notify: options.notify,
        })
    }

    async fn client(
        &self,
        during: &'static str,
    ) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(pg_error(during))
    }
}

/// One record to upsert, in SQL types.
struct Row<'a> {
    record: &'a StoreRecord,
    millis: i64,
    counter: i64,
    ttl: Option<i64>,
}

/// The keys and timestamps of some rows, as the array parameters of the
/// upsert and of the change feed.
struct Stamps<'a> {
    maps: Vec<&'a str>,
    keys: Vec<&'a str>,
    millis: Vec<i64>,
    counters: Vec<i64>,
    nodes: Vec<&'a str>,
}

impl<'a> Stamps<'a> {
    fn of(rows: impl Iterator<Item = &'a Row<'a>> + Clone) -> Self {
        Self {
            maps: rows.clone().map(|r| r.record.map_name.as_str()).collect(),
            keys: rows.clone().map(|r| r.record.key.as_str()).collect(),
            millis: rows.clone().map(|r| r.millis).collect(),
            counters: rows.clone().map(|r| r.counter).collect(),
            nodes: rows.map(|r| r.record.timestamp.node_id.as_str()).collect(),
        }
    }
}

#[async_trait::async_trait]
impl ServerStore for PostgresStore {
    async fn merge(&self, records: Vec<StoreRecord>) -> Result<Vec<bool>, StorageError> {
        let during = "merging records";
        // Of several records for one key only the newest can win; an
        // upsert must not touch a row twice.
        let mut newest: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(error) = super::invalid(self, r) {
                return Err(error);
            }
            let slot = newest.entry((&r.map_name, &r.key)).or_insert(i);
            if r.timestamp > records[*slot].timestamp {
                *slot = i;
            }
        }
        let mut winners: Vec<usize> = newest.into_values().collect();
        // Key order: concurrent merges lock rows in the same order.
        winners.sort_by(|a, b| {
            let (a, b) = (&records[*a], &records[*b]);
            (&a.map_name, &a.key).cmp(&(&b.map_name, &b.key))
        });
        let rows = winners
            .iter()
            .map(|i| to_row(&records[*i]))
            .collect::<Result<Vec<_>, _>>()?;
        let stamps = Stamps::of(rows.iter());
        let values: Vec<Option<&[u8]>> = rows.iter().map(|r| r.record.value.as_deref()).collect();
        let ttls: Vec<Option<i64>> = rows.iter().map(|r| r.ttl).collect();

        let mut client = self.client(during).await?;
        let tx = client.transaction().await.map_err(pg_error(during))?;
        let upsert = tx
            .prepare_cached(
                r#"INSERT INTO topgun_records AS r
                       (map_name, key, value, millis, counter, node_id, ttl_ms)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[],
                                        $4::int8[], $5::int8[], $6::text[], $7::int8[])
                   ON CONFLICT (map_name, key) DO UPDATE SET
                       value = excluded.value, millis = excluded.millis,
                       counter = excluded.counter, node_id = excluded.node_id,
                       ttl_ms = excluded.ttl_ms
                   WHERE (excluded.millis, excluded.counter, excluded.node_id COLLATE "C")
                       > (r.millis, r.counter, r.node_id COLLATE "C")
                   RETURNING map_name, key"#,
            )
            .await
            .map_err(pg_error(during))?;
        let applied_rows = tx
            .query(
                &upsert,
                &[
                    &stamps.maps,
                    &stamps.keys,
                    &values,
                    &stamps.millis,
                    &stamps.counters,
                    &stamps.nodes,
                    &ttls,
                ],
            )
            .await
            .map_err(pg_error(during))?;
        let applied: HashSet<(&str, &str)> = applied_rows
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let is_applied = |r: &StoreRecord| applied.contains(&(r.map_name.as_str(), r.key.as_str()));
        let mut seq = None;
        if !applied.is_empty() {
            let changed = Stamps::of(rows.iter().filter(|r| is_applied(r.record)));
            seq = Some(feed::append(&tx, self.feed.origin(), &changed, self.notify).await?);
        }
        tx.commit().await.map_err(pg_error(during))?;
        if let Some(seq) = seq {
            self.feed.confirmed(seq);
        }
        let mut flags = vec![false; records.len()];
        for i in winners {
            flags[i] = is_applied(&records[i]);
        }
        Ok(flags)
    }

    fn refuses(
        &self,
        map_name: &str,
        key: &str,
        timestamp: &Timestamp,
        ttl_ms: Option<u64>,
    ) -> Option<&'static str> {
        let text = [map_name, key, timestamp.node_id.as_str()];
        if text.iter().any(|t| t.contains('\0')) {
            Some("PostgreSQL text cannot hold a NUL character (map name, key or node id)")
        } else if map_name.len() + key.len() > MAX_KEY_BYTES {
            Some("map name and key are longer than this store indexes (2,000 bytes together)")
        } else if i64::try_from(timestamp.millis).is_err()
            || ttl_ms.is_some_and(|t| i64::try_from(t).is_err())
        {
            Some("a timestamp or TTL beyond PostgreSQL's bigint")
        } else {
            None
        }
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        let during = "reading records";
        let client = self.client(during).await?;
        let statement = client
            .prepare_cached(
                "SELECT key, value, millis, counter, node_id, ttl_ms FROM topgun_records
                 WHERE map_name = $1 AND key = ANY($2)",
            )
            .await
            .map_err(pg_error(during))?;
        let rows = client
            .query(&statement, &[&map_name, &keys])
            .await
            .map_err(pg_error(during))?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            let record = record_of(map_name, row)?;
            found.insert(record.key.clone(), record);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        let during = "listing maps";
        let client = self.client(during).await?;
        // A skip scan over the primary key: one index probe per map.
        let rows = client
            .query(
                r#"WITH RECURSIVE m(name) AS (
                       (SELECT map_name FROM topgun_records ORDER BY map_name LIMIT 1)
                       UNION ALL
                       SELECT (SELECT r.map_name FROM topgun_records r
                               WHERE r.map_name > m.name ORDER BY r.map_name LIMIT 1)
                       FROM m WHERE m.name IS NOT NULL)
                   SELECT name FROM m WHERE name IS NOT NULL"#,
                &[],
            )
            .await
            .map_err(pg_error(during))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn feed(&self) -> Option<&dyn ChangeFeed> {
        Some(&self.feed)
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.feed.stop();
        self.pool.close();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Paged for PostgresStore {
    async fn page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let rows = self
            .scan(
                "key, value, millis, counter, node_id, ttl_ms",
                map_name,
                after,
                limit,
            )
            .await?;
        rows.iter().map(|row| record_of(map_name, row)).collect()
    }

    async fn stamp_page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        let rows = self
            .scan("key, millis, counter, node_id", map_name, after, limit)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyStamp {
                    key: row.get(0),
                    timestamp: timestamp_of(row.get(1), row.get(2), row.get(3))?,
                })
            })
            .collect()
    }
}

impl PostgresStore {
    /// A page of `columns` of a map in key order after `after`.
    async fn scan(
        &self,
        columns: &str,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<tokio_postgres::Row>, StorageError> {
        let during = "scanning records";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client(during).await?;
        let rows = match after {
            None => {
                let sql = format!(
                    "SELECT {columns} FROM topgun_records WHERE map_name = $1 ORDER BY key LIMIT $2"
                );
                let statement = client
                    .prepare_cached(&sql)
                    .await
                    .map_err(pg_error(during))?;
                client.query(&statement, &[&map_name, &limit]).await
            }
            Some(after) => {
                let sql = format!(
                    "SELECT {columns} FROM topgun_records WHERE map_name = $1 AND key > $2
                     ORDER BY key LIMIT $3"
                );
                let statement = client
                    .prepare_cached(&sql)
                    .await
                    .map_err(pg_error(during))?;
                client.query(&statement, &[&map_name, &after, &limit]).await
            }
        };
        rows.map_err(pg_error(during))
    }
}

fn to_row(record: &StoreRecord) -> Result<Row<'_>, StorageError> {
    let too_large = StorageError::InvalidInput("a timestamp or TTL beyond PostgreSQL's bigint");
    Ok(Row {
        record,
        millis: i64::try_from(record.timestamp.millis).map_err(|_| too_large)?,
        counter: i64::from(record.timestamp.counter),
        ttl: record
            .ttl_ms
            .map(i64::try_from)
            .transpose()
            .map_err(|_| StorageError::InvalidInput("a TTL beyond PostgreSQL's bigint"))?,
    })
}

/// The record of a `key, value, millis, counter, node_id, ttl_ms` row.
fn record_of(map_name: &str, row: &tokio_postgres::Row) -> Result<StoreRecord, StorageError> {
    let ttl: Option<i64> = row.get(5);
    Ok(StoreRecord {
        map_name: map_name.to_owned(),
        key: row.get(0),
        value: row.get(1),
        timestamp: timestamp_of(row.get(2), row.get(3), row.get(4))?,
        ttl_ms: ttl.map(|t| u64::try_from(t).unwrap_or(0)),
        dirty: false,
    })
}

fn timestamp_of(millis: i64, counter: i64, node_id: String) -> Result<Timestamp, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt {
        what: "a PostgreSQL record's timestamp",
        source: what.to_owned().into(),
    };
    Ok(Timestamp::new(
        u64::try_from(millis).map_err(|_| corrupt("negative millis"))?,
        u32::try_from(counter).map_err(|_| corrupt("counter out of range"))?,
        node_id,
    ))
}

/// A PostgreSQL error with its whole cause chain in its message (the
/// driver's own message is often just "db error").
#[derive(Debug)]
struct PgFailure {
    text: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PgFailure {
    fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let mut text = source.to_string();
        let mut next = source.source();
        while let Some(cause) = next {
            let line = cause.to_string();
            if !text.contains(&line) {
                text.push_str(": ");
                text.push_str(&line);
            }
            next = cause.source();
        }
        Self {
            text,
            source: Box::new(source),
        }
    }
}

impl fmt::Display for PgFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PgFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Maps an error of the driver, the pool (no connection could be had) or
/// the URL parser to a [`StorageError::Backend`].
fn pg_error<E>(during: &'static str) -> impl Fn(E) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| StorageError::Backend {
        backend: "postgres",
        during,
        source: Box::new(PgFailure::new(source)),
    }
}
