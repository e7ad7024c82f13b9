//! Reads of the tables that describe the cluster's nodes (`system.local`, `system.peers`,
//! `system.peers_v2`), recognized in a statement's text: which table, which columns under
//! which names, and which node the `WHERE` clause asks for.
//!
//! Drivers read these tables on their control connection at start-up and after topology
//! events, with `*`, with column lists (some with aliases), with `count(*)`, and with `WHERE`
//! on the key columns (`key = 'local'`, `peer = ?`, `peer = ? AND peer_port = ?`), as QUERY
//! and as PREPARE/EXECUTE. Anything else in such a statement (a function, `JSON`) is kept as
//! an unknown selector: its values come from the cluster's own answer where that can carry no
//! address.

use crate::statement::lexer::{Lexer, Token, TokenKind};
use crate::statement::{Statement, StatementKind};

/// Whether `text` may read a topology table: a quick test before parsing, since every SELECT
/// is looked at (it mentions `local` or `peers`, in any case).
fn may_be_topology(text: &str) -> bool {
    let bytes = text.as_bytes();
    let has = |word: &[u8]| {
        bytes
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    has(b"local") || has(b"peers")
}

/// Which table a read is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemTable {
    /// `system.local`: the node the driver is connected to.
    Local,
    /// `system.peers`: the other nodes, addresses without ports.
    Peers,
    /// `system.peers_v2` (Cassandra 4.0+): the other nodes, with ports.
    PeersV2,
}

impl SystemTable {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "system.local",
            Self::Peers => "system.peers",
            Self::PeersV2 => "system.peers_v2",
        }
    }
}

/// One selected expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A column, by its name in the table.
    Column(String),
    /// `count(*)` or `count(1)`.
    Count,
    /// Anything else (a function call, an arithmetic term).
    Other,
}

/// The value a `WHERE` restriction compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A literal as written (a string's content, a number's digits).
    Literal(String),
    /// The `index`th bind marker of the statement (`?` or `:name`), 0-based.
    Marker { index: usize, name: Option<String> },
}

/// `column = operand`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    pub column: String,
    pub operand: Operand,
}

/// A selected expression with the name it is given (`AS alias`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub selector: Selector,
    pub alias: Option<String>,
}

/// A read of one of the topology tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemQuery {
    pub table: SystemTable,
    /// `None` for `*`: every column of the table, in the table's order.
    pub selectors: Option<Vec<Selected>>,
    /// `SELECT JSON`: one text column holding each row as JSON.
    pub json: bool,
    /// `WHERE ... AND ...`, equality restrictions only.
    pub restrictions: Vec<Restriction>,
    /// A restriction the proxy cannot evaluate (`IN`, `<`, `token(...)`): it answers with
    /// every row rather than risk leaving one out.
    pub unknown_restriction: bool,
    /// `LIMIT n` as a literal (a bound limit is not applied: more rows rather than too few).
    pub limit: Option<usize>,
}

impl SystemQuery {
    /// The read of a topology table that `statement` (the classified `text`) is, if it is
    /// one: a SELECT that mentions one, parsed. `keyspace` is the connection's current
    /// keyspace (`USE`), for unqualified table names.
    pub fn of(statement: &Statement, text: &str, keyspace: Option<&str>) -> Option<Self> {
        if statement.kind == StatementKind::Select && may_be_topology(text) {
            Self::parse(text, keyspace)
        } else {
            None
        }
    }

    /// The read of a topology table in `text`, if it is one. `keyspace` is the connection's
    /// current keyspace (`USE`), for unqualified table names.
    pub fn parse(text: &str, keyspace: Option<&str>) -> Option<Self> {
        let tokens: Vec<Token<'_>> = Lexer::new(text).collect();
        let mut at = Cursor { tokens, i: 0 };
        if !at.word("select") {
            return None;
        }
        let json = at.word("json");
        at.word("distinct");
        let selectors = if at.symbol('*') {
            None
        } else {
            Some(at.selectors()?)
        };
        if !at.word("from") {
            return None;
        }
        let table = at.table(keyspace)?;
        let mut query = Self {
            table,
            selectors,
            json,
            restrictions: Vec::new(),
            unknown_restriction: false,
            limit: None,
        };
        if at.word("where") {
            at.restrictions(&mut query);
        }
        if at.word("limit") {
            query.limit = at
                .bump()
                .filter(|t| t.kind == TokenKind::Number)
                .and_then(|t| t.value().parse().ok());
        }
        Some(query)
    }

    /// Whether the statement asks for `count(*)`.
    pub fn is_count(&self) -> bool {
        self.selectors
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.selector == Selector::Count))
    }

    /// Whether the proxy can compute every selected expression (columns and `count(*)`, not
    /// functions or JSON).
    pub fn is_answerable(&self) -> bool {
        !self.json
            && self
                .selectors
                .as_ref()
                .is_none_or(|s| s.iter().all(|s| s.selector != Selector::Other))
    }
}

struct Cursor<'a> {
    tokens: Vec<Token<'a>>,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.i)
    }

    fn bump(&mut self) -> Option<&Token<'a>> {
        let t = self.tokens.get(self.i);
        self.i += 1;
        t
    }

    fn word(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_word(word)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn symbol(&mut self, symbol: char) -> bool {
        if self.peek().is_some_and(|t| t.is_symbol(symbol)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Selectors up to `FROM`, each with an optional `AS alias`.
    fn selectors(&mut self) -> Option<Vec<Selected>> {
        let mut selectors = Vec::new();
        loop {
            let selector = self.selector()?;
            let alias = if self.word("as") {
                Some(
                    self.bump()
                        .filter(|t| t.is_identifier())?
                        .value()
                        .into_owned(),
                )
            } else {
                None
            };
            selectors.push(Selected { selector, alias });
            if !self.symbol(',') {
                return Some(selectors);
            }
        }
    }

    fn selector(&mut self) -> Option<Selector> {
        let first = self.bump()?.clone();
        if !first.is_identifier() {
            self.skip_term();
            return Some(Selector::Other);
        }
        if self.peek().is_some_and(|t| t.is_symbol('(')) {
            // A function call: count(*) / count(1) are the ones with a meaning here.
            let start = self.i;
            self.skip_parenthesized();
            let args: Vec<&Token<'_>> = self.tokens[start + 1..self.i.saturating_sub(1)]
                .iter()
                .collect();
            let counts = first.kind == TokenKind::Word
                && first.raw.eq_ignore_ascii_case("count")
                && args.len() == 1
                && (args[0].is_symbol('*') || args[0].raw == "1");
            return Some(if counts {
                Selector::Count
            } else {
                Selector::Other
            });
        }
        if self
            .peek()
            .is_some_and(|t| !t.is_symbol(',') && !t.is_word("as") && !t.is_word("from"))
        {
            self.skip_term();
            return Some(Selector::Other);
        }
        Some(Selector::Column(first.value().into_owned()))
    }

    /// Skips the rest of a selector term, up to `,`, `AS` or `FROM` outside parentheses.
    fn skip_term(&mut self) {
        while let Some(t) = self.peek() {
            if t.is_symbol(',') || t.is_word("as") || t.is_word("from") {
                return;
            }
            if t.is_symbol('(') {
                self.skip_parenthesized();
            } else {
                self.i += 1;
            }
        }
    }

    /// Skips a parenthesized group starting at `(`.
    fn skip_parenthesized(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.bump() {
            if t.is_symbol('(') {
                depth += 1;
            } else if t.is_symbol(')') {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// `[keyspace.]table`, one of the topology tables.
    fn table(&mut self, keyspace: Option<&str>) -> Option<SystemTable> {
        let first = self.bump()?.clone();
        if !first.is_identifier() {
            return None;
        }
        let (ks, table) = if self.symbol('.') {
            let second = self.bump()?.clone();
            if !second.is_identifier() {
                return None;
            }
            (
                Some(first.value().into_owned()),
                second.value().into_owned(),
            )
        } else {
            (keyspace.map(str::to_owned), first.value().into_owned())
        };
        if ks.as_deref() != Some("system") {
            return None;
        }
        match table.as_str() {
            "local" => Some(SystemTable::Local),
            "peers" => Some(SystemTable::Peers),
            "peers_v2" => Some(SystemTable::PeersV2),
            _ => None,
        }
    }

    /// `col = operand AND ...`; markers are numbered in order, counting any before `WHERE`.
    fn restrictions(&mut self, query: &mut SystemQuery) {
        let mut markers = self.tokens[..self.i]
            .iter()
            .filter(|t| matches!(t.kind, TokenKind::Marker | TokenKind::NamedMarker))
            .count();
        loop {
            let Some(column) = self.bump().filter(|t| t.is_identifier()).cloned() else {
                query.unknown_restriction = true;
                return;
            };
            if !self.symbol('=') {
                query.unknown_restriction = true;
                return;
            }
            let Some(value) = self.bump().cloned() else {
                query.unknown_restriction = true;
                return;
            };
            let operand = match value.kind {
                TokenKind::String | TokenKind::Number | TokenKind::Word => {
                    Operand::Literal(value.value().into_owned())
                }
                TokenKind::Marker => {
                    markers += 1;
                    Operand::Marker {
                        index: markers - 1,
                        name: None,
                    }
                }
                TokenKind::NamedMarker => {
                    markers += 1;
                    Operand::Marker {
                        index: markers - 1,
                        name: Some(value.value().into_owned()),
                    }
                }
                _ => {
                    query.unknown_restriction = true;
                    return;
                }
            };
            query.restrictions.push(Restriction {
                column: column.value().into_owned(),
                operand,
            });
            if !self.word("and") {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<SystemQuery> {
        SystemQuery::parse(text, None)
    }

    fn columns(names: &[&str]) -> Option<Vec<Selected>> {
        Some(
            names
                .iter()
                .map(|n| Selected {
                    selector: Selector::Column((*n).to_owned()),
                    alias: None,
                })
                .collect(),
        )
    }

    #[test]
    fn what_drivers_send() {
        let q = parse("SELECT * FROM system.local WHERE key='local'").unwrap();
        assert_eq!(q.table, SystemTable::Local);
        assert_eq!(q.selectors, None);
        assert_eq!(
            q.restrictions,
            vec![Restriction {
                column: "key".into(),
                operand: Operand::Literal("local".into())
            }]
        );
        let q = parse("select peer, data_center, host_id, rack, release_version, rpc_address, tokens from system.peers").unwrap();
        assert_eq!(q.table, SystemTable::Peers);
        assert_eq!(
            q.selectors,
            columns(&[
                "peer",
                "data_center",
                "host_id",
                "rack",
                "release_version",
                "rpc_address",
                "tokens"
            ])
        );
        let q = parse("SELECT * FROM system.peers_v2 WHERE peer = :address AND peer_port = :port")
            .unwrap();
        assert_eq!(q.table, SystemTable::PeersV2);
        assert_eq!(
            q.restrictions[1],
            Restriction {
                column: "peer_port".into(),
                operand: Operand::Marker {
                    index: 1,
                    name: Some("port".into())
                }
            }
        );
        let q = parse("SELECT count(*) FROM system.peers").unwrap();
        assert!(q.is_count());
        let q = parse("SELECT rpc_address AS addr, \"data_center\" FROM \"system\".\"local\";")
            .unwrap();
        let selectors = q.selectors.unwrap();
        assert_eq!(
            selectors[0].selector,
            Selector::Column("rpc_address".into())
        );
        assert_eq!(selectors[0].alias.as_deref(), Some("addr"));
        assert_eq!(
            selectors[1].selector,
            Selector::Column("data_center".into())
        );
    }

    #[test]
    fn functions_and_json() {
        let q = parse("SELECT JSON * FROM system.local").unwrap();
        assert!(q.json && !q.is_answerable());
        let q = parse("SELECT writetime(rpc_address), peer FROM system.peers").unwrap();
        let selectors = q.selectors.clone().unwrap();
        assert_eq!(selectors[0].selector, Selector::Other);
        assert_eq!(selectors[1].selector, Selector::Column("peer".into()));
        assert!(!q.is_answerable());
        let q = parse("SELECT count(1) AS n FROM system.peers WHERE data_center = ?").unwrap();
        assert!(q.is_count() && q.is_answerable());
        let q = parse("SELECT * FROM system.peers WHERE peer IN ('1.2.3.4')").unwrap();
        assert!(q.unknown_restriction);
    }

    #[test]
    fn other_tables_are_not_topology() {
        assert_eq!(parse("SELECT * FROM system_schema.tables"), None);
        assert_eq!(parse("SELECT * FROM ks.local"), None);
        assert_eq!(parse("SELECT * FROM local"), None);
        assert_eq!(
            SystemQuery::parse("SELECT * FROM local", Some("system")).map(|q| q.table),
            Some(SystemTable::Local)
        );
        assert_eq!(parse("INSERT INTO system.local (key) VALUES ('x')"), None);
        assert_eq!(parse("SELECT * FROM system.local_other"), None);
    }
}
