//! Input checks shared by every backend, so they all reject the same
//! things with the same error before touching any data.

use crate::error::StorageError;
use crate::model::{LocalWrite, OpType, StoreRecord};

/// Checks a map name and key: both must be non-empty.
pub(crate) fn names(map_name: &str, key: &str) -> Result<(), StorageError> {
    map(map_name)?;
    if key.is_empty() {
        return Err(StorageError::InvalidInput("key must not be empty"));
    }
    Ok(())
}

/// Checks a map name: it must be non-empty.
pub(crate) fn map(map_name: &str) -> Result<(), StorageError> {
    if map_name.is_empty() {
        return Err(StorageError::InvalidInput("map name must not be empty"));
    }
    Ok(())
}

/// Checks a [`LocalWrite`]: non-empty names, a `Put` with a value or a
/// `Remove` without one.
pub(crate) fn local_write(write: &LocalWrite) -> Result<(), StorageError> {
    names(&write.map_name, &write.key)?;
    match (write.op_type, &write.value) {
        (OpType::Put, Some(_)) | (OpType::Remove, None) => Ok(()),
        (OpType::Put, None) => Err(StorageError::InvalidInput("a Put write needs a value")),
        (OpType::Remove, Some(_)) => Err(StorageError::InvalidInput(
            "a Remove write must not carry a value",
        )),
        (OpType::Clear, _) => Err(StorageError::InvalidInput(
            "write_local does not take Clear ops; use clear_map",
        )),
    }
}

/// Checks records for `apply_remote`: every one needs non-empty names.
pub(crate) fn remote_records(records: &[StoreRecord]) -> Result<(), StorageError> {
    records
        .iter()
        .try_for_each(|record| names(&record.map_name, &record.key))
}
