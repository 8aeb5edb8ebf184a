//! [`ScanCursor`]: the one way to read a whole map page by page.

use crate::error::StorageError;
use crate::model::{KeyStamp, StoreRecord};
use crate::paged::Paged;

/// A position in a map's records (tombstones included), in key order
/// (or in the store's own order, see [`any_order`](Self::any_order)):
/// each [`next_page`](Self::next_page) reads the next page with
/// [`Paged::page`] (any [`Store`](crate::Store) is [`Paged`]). The cursor holds no borrow of the store, so it can
/// live in a stream between reads; writes between pages are seen or not
/// depending on their key, as with any key-ordered scan.
#[derive(Debug, Clone)]
pub struct ScanCursor {
    map: String,
    after: Option<String>,
    page_size: usize,
    in_store_order: bool,
    done: bool,
}

impl ScanCursor {
    /// A cursor before the first record of `map`, reading `page_size`
    /// records per page (at least 1).
    pub fn new(map: impl Into<String>, page_size: usize) -> Self {
        Self {
            map: map.into(),
            after: None,
            page_size: page_size.max(1),
            in_store_order: false,
            done: false,
        }
    }

    /// Starts after key `after` instead (exclusive; it need not exist).
    #[must_use]
    pub fn after(mut self, after: Option<String>) -> Self {
        self.after = after;
        self
    }

    /// Reads the records in the store's own order
    /// ([`Paged::page_in_store_order`],
    /// [`Paged::stamp_page_in_store_order`]), for a reader that wants all
    /// of them and not their order.
    #[must_use]
    pub fn any_order(mut self) -> Self {
        self.in_store_order = true;
        self
    }

    /// The map read.
    pub fn map(&self) -> &str {
        &self.map
    }

    /// The next page, or `None` once the map is read to its end. A page is
    /// never empty.
    ///
    /// # Errors
    /// The store's; the cursor stays where it was, so the call can be
    /// retried.
    pub async fn next_page<S: Paged + ?Sized>(
        &mut self,
        store: &S,
    ) -> Result<Option<Vec<StoreRecord>>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let (after, limit) = (self.after.as_deref(), self.page_size);
        let page = if self.in_store_order {
            store.page_in_store_order(&self.map, after, limit).await?
        } else {
            store.page(&self.map, after, limit).await?
        };
        Ok(self.advance(page, |r| &r.key))
    }

    /// [`next_page`](Self::next_page) without the values, with
    /// [`Paged::stamp_page`]: keys and timestamps.
    ///
    /// # Errors
    /// As for [`next_page`](Self::next_page).
    pub async fn next_stamps<S: Paged + ?Sized>(
        &mut self,
        store: &S,
    ) -> Result<Option<Vec<KeyStamp>>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let (after, limit) = (self.after.as_deref(), self.page_size);
        let page = if self.in_store_order {
            store
                .stamp_page_in_store_order(&self.map, after, limit)
                .await?
        } else {
            store.stamp_page(&self.map, after, limit).await?
        };
        Ok(self.advance(page, |s| &s.key))
    }

    /// Moves past `page` (a short page is the last, see `Store::scan`).
    fn advance<T>(&mut self, page: Vec<T>, key: impl Fn(&T) -> &String) -> Option<Vec<T>> {
        self.done = page.len() < self.page_size;
        let last = page.last()?;
        self.after = Some(key(last).clone());
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalWrite, MemoryStore, OpType, Store};
    use topgun_core::Timestamp;

    async fn store_with(keys: &[&str]) -> MemoryStore {
        let store = MemoryStore::new();
        for (i, key) in keys.iter().enumerate() {
            store
                .write_local(LocalWrite {
                    map_name: "m".into(),
                    key: (*key).into(),
                    op_type: OpType::Put,
                    value: Some(vec![1]),
                    timestamp: Timestamp::new(i as u64 + 1, 0, "n"),
                    ttl_ms: None,
                })
                .await
                .unwrap();
        }
        store
    }

    async fn pages(store: &MemoryStore, mut cursor: ScanCursor) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Some(page) = cursor.next_page(store).await.unwrap() {
            out.push(page.into_iter().map(|r| r.key).collect());
        }
        out
    }

    #[tokio::test]
    async fn pages_through_a_map_and_stops_at_its_end() {
        let store = store_with(&["a", "b", "c", "d", "e"]).await;
        assert_eq!(
            pages(&store, ScanCursor::new("m", 2)).await,
            [vec!["a", "b"], vec!["c", "d"], vec!["e"]]
        );
        assert_eq!(
            pages(&store, ScanCursor::new("m", 5)).await,
            [vec!["a", "b", "c", "d", "e"]]
        );
        assert_eq!(
            pages(&store, ScanCursor::new("m", 2).after(Some("b".into()))).await,
            [vec!["c", "d"], vec!["e"]]
        );
        assert!(pages(&store, ScanCursor::new("none", 2)).await.is_empty());

        let mut cursor = ScanCursor::new("m", 3);
        let mut stamps = Vec::new();
        while let Some(page) = cursor.next_stamps(&store).await.unwrap() {
            stamps.push(page.into_iter().map(|s| s.key).collect::<Vec<_>>());
        }
        assert_eq!(stamps, [vec!["a", "b", "c"], vec!["d", "e"]]);
    }
}
