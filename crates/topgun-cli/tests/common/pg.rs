//! A fresh PostgreSQL database per test on the server named by
//! `TOPGUN_TEST_POSTGRES` (`cargo xtask ci` starts one and sets it), and
//! `topgun serve --store` nodes on it.

use super::data::block_on;
use super::Server;
use std::path::Path;
use tokio_postgres::NoTls;

/// The environment variable with the admin URL.
pub const URL_ENV: &str = "TOPGUN_TEST_POSTGRES";

/// The URL of a new empty database, or `None` (said loudly on stderr)
/// when `TOPGUN_TEST_POSTGRES` is not set.
pub fn fresh_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var(URL_ENV) else {
        eprintln!("SKIPPED {test}: set {URL_ENV} to a PostgreSQL URL (cargo xtask ci does)");
        return None;
    };
    let name = format!("topgun_{}", uuid::Uuid::new_v4().simple());
    block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

/// The first column of the first row of `sql` (an `int8`).
pub fn count(url: &str, sql: &str) -> i64 {
    block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

/// `topgun serve --no-auth --store URL` on a free port (`dir` unused but
/// required by the harness).
pub fn node(dir: &Path, url: &str) -> Server {
    Server::start(dir, "127.0.0.1:0", &["--no-auth", "--store", url])
}

/// Starts `topgun sync` of the client at `dir` through `server` (stderr
/// piped, for a failure report) and returns it once the database at `db`
/// holds some of its records, with how many it held then.
// The child is handed to the caller, which waits for it; on the panic
// path it is killed and reaped first.
#[allow(clippy::zombie_processes)]
pub fn push_until_stored(dir: &Path, server: &str, db: &str) -> (std::process::Child, i64) {
    let mut push = super::topgun_cmd()
        .arg("--data")
        .arg(dir)
        .args(["--server", server, "--timeout", "120", "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = count(db, "SELECT count(*) FROM topgun_records");
        if n > 0 {
            return (push, n);
        }
        if std::time::Instant::now() >= deadline {
            let _ = push.kill();
            let _ = push.wait();
            panic!("nothing pushed");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
