//! A throwaway PostgreSQL for the tests and benchmarks that need one:
//! Debian's server binaries (installed with apt when missing), `initdb` in
//! `target/pg` (as the `postgres` user when run as root: initdb refuses
//! root), `pg_ctl start` on a free port of 127.0.0.1, trust auth; stopped
//! and removed when dropped.

use crate::apt::{self, check, is_root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable tests read the server's URL from (the
/// `postgres` database of a superuser `postgres`; tests create their own
/// databases).
pub(crate) const URL_ENV: &str = "TOPGUN_TEST_POSTGRES";
/// The environment variable naming a script that restarts the server
/// (`pg_ctl restart -m fast`), for tests of a restart under load.
pub(crate) const RESTART_ENV: &str = "TOPGUN_TEST_POSTGRES_RESTART";

/// A running throwaway server.
#[derive(Debug)]
pub(crate) struct Postgres {
    pub(crate) url: String,
    pub(crate) restart_script: PathBuf,
    dir: PathBuf,
    pg_ctl: PathBuf,
}

impl Postgres {
    /// Installs (if needed), initialises and starts a server under
    /// `target/pg`.
    pub(crate) fn start(root: &Path) -> Result<Self, String> {
        let bin = bin_dir().or_else(|_| {
            install()?;
            bin_dir()
        })?;
        let dir = root.join("target/pg");
        if dir.exists() {
            // A run that was killed left its server behind.
            let _ = as_postgres(&bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(dir.join("data"))
                .status();
            fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if is_root() {
            check(
                Command::new("chown").arg("-R").arg("postgres").arg(&dir),
                "chown",
            )?;
        }
        let data = dir.join("data");
        check(
            as_postgres(&bin.join("initdb"))
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        )?;
        let port = crate::free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c max_connections=300",
            dir.display()
        );
        let pg_ctl = bin.join("pg_ctl");
        check(
            as_postgres(&pg_ctl)
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(dir.join("log")),
            "pg_ctl start",
        )?;
        let restart_script = dir.join("restart.sh");
        let runner = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        fs::write(
            &restart_script,
            format!(
                "#!/bin/sh\nexec {runner}{} restart -m fast -w -t 60 -D {} -o '{options}' -l {}\n",
                pg_ctl.display(),
                data.display(),
                dir.join("log").display()
            ),
        )
        .map_err(|e| format!("writing the restart script: {e}"))?;
        check(
            Command::new("chmod").arg("755").arg(&restart_script),
            "chmod",
        )?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        eprintln!("==> postgres: {url} (data in {})", data.display());
        Ok(Self {
            url,
            restart_script,
            dir,
            pg_ctl,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.pg_ctl)
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The directory of Debian's server binaries (the newest version).
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL server under /usr/lib/postgresql".to_owned())?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

/// `apt-get install postgresql`.
fn install() -> Result<(), String> {
    apt::install(&["postgresql"])
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}
