//! A server data directory: one redb file per commit lane (`topgun.redb`,
//! `topgun-1.redb`, …) and a file, `lanes`, that says how many there are.
//!
//! The number is fixed when the directory is made, since it decides which
//! file keeps each key. `lanes` is written (atomically) once every lane
//! file exists and before any record is stored, so a directory without it
//! is new, was made before lanes existed (only `topgun.redb`: one lane), or
//! saw its first start cut short (lane files but no `lanes`, as lane 0 is
//! created last: refused with a clear error rather than guessed at).

use super::{EmbeddedStore, LanedStore, ServerStore};
use crate::error::ServerError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the file holding a data directory's number of lanes.
pub const LANES_FILE: &str = "lanes";

/// The redb file of lane `lane` in the data directory `dir`: lane 0 is
/// `topgun.redb` (the one file of a directory with one lane), lane `i`
/// is `topgun-{i}.redb`.
pub fn lane_file(dir: &Path, lane: usize) -> PathBuf {
    match lane {
        0 => dir.join(super::DATA_FILE_NAME),
        i => dir.join(format!("topgun-{i}.redb")),
    }
}

/// How many lanes the data directory `dir` has; `None` for a new one.
///
/// # Errors
/// [`ServerError::DataDirLanes`] if its files do not match its `lanes`
/// file (or there are lane files but no `lanes`);
/// [`ServerError::LanesFile`] if `lanes` cannot be read or is not a
/// number.
pub fn data_dir_lanes(dir: &Path) -> Result<Option<usize>, ServerError> {
    let not_whole = |reason: String| ServerError::DataDirLanes {
        path: dir.to_owned(),
        reason,
    };
    let manifest = dir.join(LANES_FILE);
    let lanes = match std::fs::read_to_string(&manifest) {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| ServerError::LanesFile {
                path: manifest.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("expected a number of lanes, found {:?}", text.trim()),
                ),
            })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let extra = extra_lanes(dir)?;
            let first = lane_file(dir, 0).exists();
            return match (first, extra.len()) {
                (_, 1..) => Err(not_whole(format!(
                    "it has {} lane files but no `{LANES_FILE}` file. If it never served \
                     (its first start was cut short), remove its topgun*.redb files; if \
                     it did, write the number of its lane files into {}",
                    extra.len() + usize::from(first),
                    dir.join(LANES_FILE).display()
                ))),
                (true, 0) => Ok(Some(1)),
                (false, 0) => Ok(None),
            };
        }
        Err(source) => {
            return Err(ServerError::LanesFile {
                path: manifest,
                source,
            })
        }
    };
    if let Some(missing) = (0..lanes).map(|i| lane_file(dir, i)).find(|f| !f.exists()) {
        return Err(not_whole(format!(
            "{} is missing ({lanes} lanes); restore it from a backup of the whole directory",
            missing.display()
        )));
    }
    if extra_lanes(dir)?.iter().any(|&lane| lane >= lanes) {
        return Err(not_whole(format!(
            "it has more lane files than the {lanes} its `{LANES_FILE}` file says"
        )));
    }
    Ok(Some(lanes))
}

/// The lanes after lane 0 that have a file in `dir` (`topgun-{i}.redb`).
fn extra_lanes(dir: &Path) -> Result<Vec<usize>, ServerError> {
    let listed = std::fs::read_dir(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut lanes = Vec::new();
    for entry in listed {
        let entry = entry.map_err(|source| ServerError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let lane = name
            .to_str()
            .and_then(|n| n.strip_prefix("topgun-"))
            .and_then(|n| n.strip_suffix(".redb"))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&lane| lane >= 1);
        lanes.extend(lane);
    }
    Ok(lanes)
}

/// Opens the data directory `dir`, creating it if missing: its own lanes,
/// or `lanes` (at least one) for a new one. Blocks on file I/O.
pub(crate) fn open(dir: &Path, lanes: usize) -> Result<Arc<dyn ServerStore>, ServerError> {
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let (lanes, made) = match data_dir_lanes(dir)? {
        Some(made) => {
            if made != lanes {
                tracing::info!(lanes = made, asked = lanes, dir = %dir.display(), "the data directory keeps the lanes it was made with");
            }
            (made, true)
        }
        None => (lanes.max(1), false),
    };
    let mut stores: Vec<Arc<dyn ServerStore>> = Vec::with_capacity(lanes);
    // Lane 0 last: a new directory whose first start fails half-way has
    // lane files but no `topgun.redb`, and is never taken for one made
    // before lanes.
    for lane in (0..lanes).rev() {
        let path = lane_file(dir, lane);
        let store = EmbeddedStore::open_redb(&path)
            .map_err(|source| ServerError::OpenStore { path, source })?;
        stores.push(Arc::new(store));
    }
    stores.reverse();
    if !made || !dir.join(LANES_FILE).exists() {
        write_lanes_file(dir, lanes)?;
    }
    if lanes == 1 {
        return Ok(stores.remove(0));
    }
    Ok(Arc::new(LanedStore::new(stores)))
}

/// Writes `lanes` durably: a temporary file, synced, renamed over it, and
/// the directory synced.
fn write_lanes_file(dir: &Path, lanes: usize) -> Result<(), ServerError> {
    let path = dir.join(LANES_FILE);
    let temporary = dir.join(format!("{LANES_FILE}.new"));
    let failed = |source| ServerError::LanesFile {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(format!("{lanes}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temporary, &path).map_err(failed)?;
    // The rename is durable once the directory is.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: PathBuf) {
        std::fs::write(path, b"").unwrap();
    }

    fn reason(result: Result<Option<usize>, ServerError>) -> String {
        match result {
            Err(ServerError::DataDirLanes { reason, .. }) => reason,
            other => panic!("expected DataDirLanes, got {other:?}"),
        }
    }

    #[test]
    fn the_lanes_file_decides_and_must_match_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(data_dir_lanes(dir).unwrap(), None, "new");
        touch(lane_file(dir, 0));
        assert_eq!(data_dir_lanes(dir).unwrap(), Some(1), "made before lanes");
        touch(lane_file(dir, 2));
        assert!(reason(data_dir_lanes(dir)).contains("2 lane files but no"));
        std::fs::remove_file(lane_file(dir, 2)).unwrap();
        touch(lane_file(dir, 1));
        assert!(reason(data_dir_lanes(dir)).contains("cut short"));
        std::fs::write(dir.join(LANES_FILE), "2\n").unwrap();
        assert_eq!(data_dir_lanes(dir).unwrap(), Some(2));
        touch(lane_file(dir, 2));
        assert!(reason(data_dir_lanes(dir)).contains("more lane files"));
        std::fs::write(dir.join(LANES_FILE), "4\n").unwrap();
        assert!(reason(data_dir_lanes(dir)).contains("topgun-3.redb is missing"));
        std::fs::write(dir.join(LANES_FILE), "two").unwrap();
        assert!(matches!(
            data_dir_lanes(dir),
            Err(ServerError::LanesFile { .. })
        ));
    }

    #[test]
    fn a_new_dir_gets_the_lanes_asked_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 3).unwrap();
        assert_eq!(store.lanes(), 3);
        drop(store);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LANES_FILE)).unwrap(),
            "3\n"
        );
        let store = open(dir.path(), 1).unwrap();
        assert_eq!(store.lanes(), 3);
    }
}
