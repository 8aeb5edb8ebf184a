//! The `Store` conformance suite against every native backend.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod memory {
    use topgun_storage::MemoryStore;

    async fn store() -> (MemoryStore, ()) {
        (MemoryStore::new(), ())
    }

    topgun_storage::store_conformance_tests!(store);
}

#[cfg(feature = "redb")]
mod redb {
    use tempfile::TempDir;
    use topgun_storage::RedbStore;

    async fn store() -> (RedbStore, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
        (store, dir)
    }

    topgun_storage::store_conformance_tests!(store);
}
