//! The PostgreSQL schema and its versioned migrations, applied at start
//! under an advisory lock so that nodes starting together do not race.

use super::{pg_error, LOCK_MIGRATE};
use topgun_storage::StorageError;

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: i32 = 1;

/// Migration `i` brings the schema from version `i` to `i + 1`.
///
/// - `topgun_records`: the current record of every `(map, key)`,
///   tombstones included (`value` NULL). Keys compare byte-wise
///   (`COLLATE "C"`, as Rust's `str`), so scans page in the client's order
///   and the LWW comparison of node ids matches `topgun-core`.
/// - `topgun_changes`: the change feed, one row per commit, by `seq`:
///   the node that wrote it and the keys and timestamps it applied (as
///   arrays); the records themselves are read from `topgun_records`.
/// - `topgun_feed`: one row, `pruned_through`: the highest `seq` the
///   retention deleted (a reader behind it must rebuild).
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE topgun_records (
    map_name text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea,
    millis bigint NOT NULL,
    counter bigint NOT NULL,
    node_id text COLLATE "C" NOT NULL,
    ttl_ms bigint,
    PRIMARY KEY (map_name, key)
);
CREATE SEQUENCE topgun_change_seq;
CREATE TABLE topgun_changes (
    seq bigint PRIMARY KEY,
    origin text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    map_names text[] NOT NULL,
    keys text[] NOT NULL,
    millis bigint[] NOT NULL,
    counters bigint[] NOT NULL,
    node_ids text[] NOT NULL
);
-- Stored as they are: compressing them costs more than it saves here.
ALTER TABLE topgun_changes
    ALTER COLUMN map_names SET STORAGE EXTERNAL,
    ALTER COLUMN keys SET STORAGE EXTERNAL,
    ALTER COLUMN millis SET STORAGE EXTERNAL,
    ALTER COLUMN counters SET STORAGE EXTERNAL,
    ALTER COLUMN node_ids SET STORAGE EXTERNAL;
-- Retention deletes by age.
CREATE INDEX topgun_changes_at ON topgun_changes (at);
CREATE TABLE topgun_feed (pruned_through bigint NOT NULL);
INSERT INTO topgun_feed VALUES (0);
"#];

/// Brings the database to [`SCHEMA_VERSION`], one migration per
/// transaction, holding the migration lock for the whole run.
///
/// # Errors
/// [`StorageError::SchemaTooNew`] for a database a newer version wrote;
/// a backend error when PostgreSQL fails.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StorageError> {
    let during = "migrating the schema";
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])
        .await
        .map_err(pg_error(during))?;
    let result = apply(client).await;
    // Closing the session would release the lock too; unlock so that a
    // pooled connection does not keep it.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE])
        .await
        .map_err(pg_error(during));
    result.and(unlocked.map(drop))
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<(), StorageError> {
    let during = "migrating the schema";
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS topgun_schema (version integer NOT NULL)")
        .await
        .map_err(pg_error(during))?;
    let found: Option<i32> = client
        .query_opt("SELECT max(version) FROM topgun_schema", &[])
        .await
        .map_err(pg_error(during))?
        .and_then(|row| row.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION as u32,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = from as i32 + 1;
        let tx = client.transaction().await.map_err(pg_error(during))?;
        tx.batch_execute(sql).await.map_err(pg_error(during))?;
        tx.execute("DELETE FROM topgun_schema", &[])
            .await
            .map_err(pg_error(during))?;
        tx.execute("INSERT INTO topgun_schema VALUES ($1)", &[&to])
            .await
            .map_err(pg_error(during))?;
        tx.commit().await.map_err(pg_error(during))?;
        tracing::info!(version = to, "PostgreSQL schema migrated");
    }
    Ok(())
}
