//! `query`: filter, sort and limit a map's entries.

use super::Context;
use crate::args;
use crate::error::CliError;
use crate::output::Output;
use serde_json::{Map, Value};
use topgun_client::query::{Predicate, Query, QueryError, Sort, SortKey};
use topgun_client::ClientError;

pub(crate) const QUERY_EXAMPLES: &str = "\
Prints one line per result, {\"key\":…,\"value\":…}, in result order: by the
--sort keys, ties (and a query without --sort) in key order. --where and
--predicate together must both hold.

--where operators: $eq $ne $gt $gte $lt $lte $in $nin $like $regex $exists;
a plain value means equality. Predicate ops: eq neq gt gte lt lte like regex
in between isNull isNotNull contains containsAll containsAny, and and/or/not
with `children`. Attributes are dotted paths (address.city, tags.0); `_key`
is the record key. An invalid query exits with code 2 and says where it is
wrong.

Examples:
  topgun --data ./db query users --where '{\"city\":\"Oslo\",\"age\":{\"$gte\":18}}'
  topgun --data ./db query users --predicate '{\"op\":\"like\",\"attribute\":\"name\",\"value\":\"a%\"}'
  topgun --data ./db query users --predicate '{\"op\":\"or\",\"children\":[{\"op\":\"lt\",\"attribute\":\"age\",\"value\":18},{\"op\":\"isNull\",\"attribute\":\"age\"}]}'
  topgun --data ./db query users --sort age:desc --sort name --limit 10";

/// Arguments of `query`.
#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// Map name.
    pub(crate) map: String,
    /// Filter: a JSON object of field → value (equality) or field →
    /// operator object, e.g. {"age":{"$gt":18}}.
    #[arg(long = "where", value_name = "JSON", value_parser = args::json_object)]
    filter: Option<Map<String, Value>>,
    /// Filter: a JSON predicate tree {op, attribute, value, children}, e.g.
    /// {"op":"gt","attribute":"age","value":18}.
    #[arg(long, value_name = "JSON", value_parser = args::predicate)]
    predicate: Option<Predicate>,
    /// Sort key, FIELD or FIELD:asc or FIELD:desc; repeat for more keys,
    /// most significant first.
    #[arg(long, value_name = "FIELD[:desc]", value_parser = args::sort_field)]
    sort: Vec<SortKey>,
    /// Return at most N results.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

impl QueryArgs {
    fn to_query(&self) -> Query {
        let mut query = Query::new();
        query.where_ = self
            .filter
            .as_ref()
            .map(|filter| rmpv::ext::to_value(filter).unwrap_or(rmpv::Value::Nil));
        query.predicate = self.predicate.clone().map(Box::new);
        query.sort = (!self.sort.is_empty()).then(|| Sort::List(self.sort.clone()));
        query.limit = self.limit;
        query
    }
}

/// `query MAP [--where JSON] [--predicate JSON] [--sort FIELD[:desc]]… [--limit N]`.
pub(crate) async fn query(ctx: &Context, args: QueryArgs) -> Result<(), CliError> {
    let map = ctx.map(&args.map)?;
    ctx.synced().await?;
    let page = match map.query(&args.to_query()).await {
        Ok(page) => page,
        Err(ClientError::Query(e)) if !matches!(e, QueryError::Storage(_)) => {
            return Err(CliError::InvalidQuery(e))
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Output::stdout();
    for (key, value) in &page.results {
        out.row(key, value)?;
    }
    out.finish()?;
    if page.undecodable > 0 {
        eprintln!(
            "warning: {} stored values could not be decoded and were skipped",
            page.undecodable
        );
    }
    if page.has_more {
        ctx.note("more results follow (raise --limit to see them)");
    }
    Ok(())
}
