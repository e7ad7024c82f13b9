//! Data-center names in keyspace replication, mapped from one cluster's names to the other's.
//!
//! `CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc_a': 3}`
//! names the data centers of the cluster it was written for. Sent as it is to a cluster whose
//! data centers have other names, it would create a keyspace with no replica anywhere (or be
//! refused). The proxy renames the keys of the replication map for the other cluster, with the
//! operator's `--dc-map`; values, other options and everything else stay byte for byte.

use crate::statement::lexer::{Lexer, Token, TokenKind};

/// `text` with each data-center key of its replication map renamed by `map` (from → to), or
/// `None` when it is not a `CREATE`/`ALTER KEYSPACE` with `NetworkTopologyStrategy` naming a
/// data center of the map.
pub fn map_datacenters(text: &str, map: &[(String, String)]) -> Option<String> {
    if map.is_empty() {
        return None;
    }
    let tokens: Vec<Token<'_>> = Lexer::new(text).collect();
    let starts = |i: usize, verb: &str| {
        tokens.get(i).is_some_and(|t| t.is_word(verb))
            && tokens
                .get(i + 1)
                .is_some_and(|t| t.is_word("keyspace") || t.is_word("schema"))
    };
    if !(starts(0, "create") || starts(0, "alter")) {
        return None;
    }
    // The map after `replication =`.
    let at = tokens.iter().position(|t| t.is_word("replication"))?;
    let open = tokens[at..].iter().position(|t| t.is_symbol('{'))? + at;
    let close = tokens[open..].iter().position(|t| t.is_symbol('}'))? + open;
    let entries = &tokens[open + 1..close];
    let is_nts = entries.windows(3).any(|w| {
        w[0].kind == TokenKind::String
            && w[0].value().eq_ignore_ascii_case("class")
            && w[1].is_symbol(':')
            && w[2].kind == TokenKind::String
            && w[2].value().ends_with("NetworkTopologyStrategy")
    });
    if !is_nts {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut last = 0;
    let mut changed = false;
    for pair in entries.windows(2) {
        let (key, colon) = (&pair[0], &pair[1]);
        if key.kind != TokenKind::String || !colon.is_symbol(':') {
            continue;
        }
        let name = key.value();
        if let Some((_, to)) = map.iter().find(|(from, _)| *from == name) {
            out.push_str(&text[last..key.span.start]);
            out.push('\'');
            out.push_str(&to.replace('\'', "''"));
            out.push('\'');
            last = key.span.end;
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Vec<(String, String)> {
        vec![
            ("dc_source".to_owned(), "dc_target".to_owned()),
            ("east".to_owned(), "west".to_owned()),
        ]
    }

    #[test]
    fn renames_the_keys_only() {
        assert_eq!(
            map_datacenters(
                "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc_source': 3, 'east' : '2'} AND durable_writes = true",
                &map()
            )
            .as_deref(),
            Some("CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc_target': 3, 'west' : '2'} AND durable_writes = true")
        );
        assert_eq!(
            map_datacenters(
                "alter keyspace ks with REPLICATION = { 'class' : 'org.apache.cassandra.locator.NetworkTopologyStrategy' , 'dc_source' : 1 }",
                &map()
            )
            .as_deref(),
            Some("alter keyspace ks with REPLICATION = { 'class' : 'org.apache.cassandra.locator.NetworkTopologyStrategy' , 'dc_target' : 1 }")
        );
    }

    #[test]
    fn leaves_everything_else_alone() {
        let simple = "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}";
        assert_eq!(map_datacenters(simple, &map()), None);
        let other_dc = "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'north': 3}";
        assert_eq!(map_datacenters(other_dc, &map()), None);
        assert_eq!(
            map_datacenters("INSERT INTO t (k, v) VALUES (1, 'dc_source')", &map()),
            None
        );
        assert_eq!(
            map_datacenters(
                "CREATE TABLE ks.t (k int PRIMARY KEY) WITH comment = 'dc_source'",
                &map()
            ),
            None
        );
        assert_eq!(
            map_datacenters(
                "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc_source': 3}",
                &[]
            ),
            None
        );
    }
}
