//! Value parsers for arguments that carry JSON or a sort spec.
//!
//! They run inside clap, so a bad value is reported as a usage error (exit
//! code 2) that names the argument, e.g.
//! `invalid value '{a' for '<JSON>': not valid JSON: key must be a string at line 1 column 2`.

use serde_json::{Map, Value};
use topgun_client::query::{Predicate, SortDirection, SortKey};

/// Any JSON value.
pub(crate) fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

/// A JSON object (the `where` clause: field → value or operator object).
pub(crate) fn json_object(s: &str) -> Result<Map<String, Value>, String> {
    match json_value(s)? {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "expected a JSON object such as {{\"age\":{{\"$gt\":18}}}}, found {}",
            type_name(&other)
        )),
    }
}

/// A predicate tree `{op, attribute?, value?, children?}`. Only its shape
/// is checked here; unknown ops and wrong operands are reported when the
/// query is compiled, with the place in the tree that is wrong.
pub(crate) fn predicate(s: &str) -> Result<Predicate, String> {
    let value = json_value(s)?;
    if !value.is_object() {
        return Err(format!(
            "expected a predicate object such as {{\"op\":\"gt\",\"attribute\":\"age\",\"value\":18}}, found {}",
            type_name(&value)
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("not a predicate: {e}"))
}

/// `FIELD`, `FIELD:asc` or `FIELD:desc`. Only a final `:asc` / `:desc` is
/// a direction, so `a:b:desc` sorts on the field `a:b`.
pub(crate) fn sort_field(s: &str) -> Result<SortKey, String> {
    let (field, direction) = match s.rsplit_once(':') {
        Some((field, "asc")) => (field, SortDirection::Asc),
        Some((field, "desc")) => (field, SortDirection::Desc),
        Some((_, other)) => {
            return Err(format!(
                "unknown sort direction `{other}` (use FIELD, FIELD:asc or FIELD:desc)"
            ))
        }
        None => (s, SortDirection::Asc),
    };
    if field.is_empty() {
        return Err("the sort field is empty (use FIELD, FIELD:asc or FIELD:desc)".to_owned());
    }
    Ok(SortKey {
        field: field.to_owned(),
        direction,
    })
}

/// A duration in seconds (`10`, `0.5`): finite and not negative.
pub(crate) fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => Ok(secs),
        _ => Err("expected a number of seconds such as 10 or 0.5".to_owned()),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_specs_parse() {
        let parse = |s| sort_field(s).map(|f| (f.field, f.direction));
        assert_eq!(parse("age"), Ok(("age".to_owned(), SortDirection::Asc)));
        assert_eq!(parse("age:asc"), Ok(("age".to_owned(), SortDirection::Asc)));
        assert_eq!(
            parse("a.b:desc"),
            Ok(("a.b".to_owned(), SortDirection::Desc))
        );
        assert_eq!(
            parse("a:b:desc"),
            Ok(("a:b".to_owned(), SortDirection::Desc))
        );
        assert!(parse("age:down").is_err_and(|e| e.contains("`down`")));
        assert!(parse(":desc").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn json_errors_say_where() {
        let err = json_value("{\"a\":").expect_err("truncated");
        assert!(err.contains("line 1 column"), "{err}");
        assert!(json_object("[1]").expect_err("array").contains("an array"));
        assert!(predicate("{\"attribute\":\"x\"}")
            .expect_err("no op")
            .contains("missing field `op`"));
    }
}
