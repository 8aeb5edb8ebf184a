//! A fresh PostgreSQL database per test, on the server named by
//! `TOPGUN_TEST_POSTGRES` (`cargo xtask ci` starts one and sets it).

use tokio_postgres::NoTls;

/// The environment variable with the admin URL.
pub const URL_ENV: &str = "TOPGUN_TEST_POSTGRES";

/// The URL of a new empty database, or `None` (said loudly on stderr)
/// when `TOPGUN_TEST_POSTGRES` is not set.
pub async fn fresh_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var(URL_ENV) else {
        eprintln!("SKIPPED {test}: set {URL_ENV} to a PostgreSQL URL (cargo xtask ci does)");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    let name = format!("topgun_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

/// A plain connection to `url` (to look at or tamper with the tables).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}
