//! Writing a name back into CQL text: the keyspace of a `USE` the proxy sends itself, the
//! keyspace it puts in front of a table name.

/// CQL's reserved words: a keyspace of such a name was created quoted and is named quoted.
const RESERVED: &[&str] = &[
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "is",
    "keyspace",
    "limit",
    "materialized",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "replace",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "update",
    "use",
    "using",
    "view",
    "where",
    "with",
];

/// A keyspace name as CQL reads it back: bare when it is a lower-case identifier that is not
/// a reserved word (as most are, and as a driver would write it), else quoted, its quotes
/// doubled.
pub fn cql(name: &str) -> String {
    let mut chars = name.chars();
    let bare = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if bare { name.to_owned() } else { quoted(name) }
}

/// `name` in double quotes, its quotes doubled: read back exactly, whatever its case.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_are_quoted_only_when_needed() {
        assert_eq!(cql("shop_2"), "shop_2");
        assert_eq!(cql("Shop"), "\"Shop\"");
        assert_eq!(cql("2shop"), "\"2shop\"");
        assert_eq!(cql("table"), "\"table\"");
        assert_eq!(cql("a\"b"), "\"a\"\"b\"");
    }
}
