//! [`Paged`]: reading a map page by page in key order — all that a
//! [`ScanCursor`](crate::ScanCursor) and a query engine need of a store.

use crate::error::StorageError;
use crate::model::{KeyStamp, StoreRecord};

/// A source of a map's records in key order, page by page, with the
/// paging rules of [`Store::scan`](crate::Store::scan). Every
/// [`Store`](crate::Store) is one; stores that are not client stores (a
/// server's) implement it themselves.
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait Paged: std::fmt::Debug + crate::SendSync {
    /// As [`Store::scan`](crate::Store::scan).
    async fn page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError>;

    /// As [`Store::scan_stamps`](crate::Store::scan_stamps).
    async fn stamp_page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError>;

    /// As [`Store::scan_in_store_order`](crate::Store::scan_in_store_order);
    /// key order ([`Paged::page`]) unless the source has a cheaper order.
    async fn page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.page(map_name, after, limit).await
    }

    /// As
    /// [`Store::scan_stamps_in_store_order`](crate::Store::scan_stamps_in_store_order);
    /// key order ([`Paged::stamp_page`]) unless the source has a cheaper
    /// order.
    async fn stamp_page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.stamp_page(map_name, after, limit).await
    }
}
