//! The query error type.

use topgun_storage::StorageError;

/// Why a query could not be compiled or run.
///
/// Compilation errors name the place in the query that is wrong with a
/// path such as `where.age.$gt` or `predicate.children[1]`, so a caller can
/// point a user at it. Evaluating a compiled query never fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// An operator this version does not know (`predicate.op`, or a `$op`
    /// key in `where`). Use one of the documented operators.
    #[error("unknown operator `{op}` at {at}")]
    UnknownOperator {
        /// The operator as written.
        op: String,
        /// Where in the query it appears.
        at: String,
    },
    /// A leaf predicate without an `attribute`, or with an empty one.
    /// Every comparison needs the field it compares.
    #[error("`{op}` at {at} needs a non-empty `attribute`")]
    MissingAttribute {
        /// The operator.
        op: &'static str,
        /// Where in the query it appears.
        at: String,
    },
    /// `and`/`or` without at least one child, or `not` without exactly one.
    #[error("`{op}` at {at} needs {expected}")]
    WrongChildren {
        /// The operator.
        op: &'static str,
        /// Where in the query it appears.
        at: String,
        /// What the operator needs, e.g. "at least one child".
        expected: &'static str,
    },
    /// The operand of an operator has the wrong shape: `between` without a
    /// two-element array, `in` without an array, `gt` with an object, ….
    #[error("`{op}` at {at} expects {expected}, found {found}")]
    InvalidValue {
        /// The operator.
        op: &'static str,
        /// Where in the query it appears.
        at: String,
        /// What the operator accepts.
        expected: &'static str,
        /// The JSON type that was given (`object`, `null`, …).
        found: &'static str,
    },
    /// A `regex` / `$regex` pattern that does not compile (or a `like`
    /// pattern too large to compile).
    #[error("invalid pattern `{pattern}` at {at}: {source}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        /// Where in the query it appears.
        at: String,
        /// The regex compiler's error.
        #[source]
        source: regex::Error,
    },
    /// An operand with no JSON form (binary data, a map with non-string
    /// keys, an extension type): queries compare JSON-like values only.
    #[error("unsupported value at {at}: queries compare JSON-like values only")]
    UnsupportedValue {
        /// Where in the query it appears.
        at: String,
    },
    /// A sort direction other than `asc` / `desc`.
    #[error("sort field {index} has unknown direction `{direction}`")]
    UnknownSortDirection {
        /// Position in `sort`.
        index: usize,
        /// The direction as written.
        direction: String,
    },
    /// A `groupBy` query that cannot run: an empty field name, an
    /// aggregation function this version does not know, or one without the
    /// field it needs.
    #[error("invalid groupBy at {at}: {reason}")]
    InvalidGrouping {
        /// Where in the query (`groupBy[0]`, `aggregations[1]`).
        at: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sort field that is empty. Name the field to sort by (a dotted path
    /// or `_key`).
    #[error("sort field {index} is empty")]
    EmptySortField {
        /// Position in `sort`.
        index: usize,
    },
    /// A `cursor` that this query did not produce: malformed, or taken from
    /// a query with a different `sort`. Start again without a cursor.
    #[error("invalid cursor: {reason}")]
    InvalidCursor {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The store failed while the query was scanning it.
    #[error("storage error while running a query: {0}")]
    Storage(#[from] StorageError),
}

/// The JSON type name of a value, for error messages.
pub(crate) fn type_name(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
