//! What a CQL statement is, read off its text without a full parser: the kind of statement,
//! whether it is conditional (a lightweight transaction), whether its outcome depends on the
//! order writes run in, and the keyspace of a `USE`.
//!
//! The proxy only needs to know where a statement goes and whether it may carry a client-side
//! write timestamp, so the [`lexer`] (comments, string literals, quoted identifiers,
//! dollar-quoted strings) is enough; anything it does not recognize is treated as a write,
//! which is the safe side for a dual-write proxy.

pub mod datacenters;
pub mod functions;
pub mod identifier;
pub mod lexer;
pub mod tables;

use lexer::{Lexer, Token, TokenKind};

/// The kind of a CQL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT: reads data.
    Select,
    /// INSERT, UPDATE, DELETE: writes data.
    Insert,
    Update,
    Delete,
    /// BEGIN … APPLY BATCH in query text.
    Batch,
    /// USE keyspace: per-connection state.
    Use,
    /// TRUNCATE.
    Truncate,
    /// CREATE, ALTER, DROP of schema objects.
    Schema,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE or USER: access control.
    AccessControl,
    /// LIST ROLES / USERS / PERMISSIONS, DESCRIBE: reads of metadata.
    ListOrDescribe,
    /// Anything else; handled like a write.
    Other,
}

impl StatementKind {
    /// Statements that change nothing on the cluster.
    pub const fn is_read(self) -> bool {
        matches!(self, Self::Select | Self::ListOrDescribe)
    }
}

impl Statement {
    /// Whether it reads a `system*` keyspace (`system`, `system_schema`, `system_auth`,
    /// `system_views`, ...), with `keyspace` the connection's or the prepared statement's
    /// when the statement names none. Those keyspaces are each cluster's own.
    pub fn reads_system(&self, keyspace: Option<&str>) -> bool {
        self.kind == StatementKind::Select
            && self
                .table
                .as_ref()
                .and_then(|t| t.keyspace.as_deref().or(keyspace))
                .is_some_and(|k| k.starts_with("system"))
    }
}

impl StatementKind {
    /// Data writes, which get one client-side timestamp so both clusters store the same
    /// write time.
    pub const fn is_data_write(self) -> bool {
        matches!(
            self,
            Self::Insert | Self::Update | Self::Delete | Self::Batch
        )
    }
}

/// What the proxy knows about a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Statement {
    pub kind: StatementKind,
    /// Has an `IF` condition (lightweight transaction): no client timestamp may be added.
    pub conditional: bool,
    /// Changes a list (append, prepend, removal of values, an element by index), or a
    /// collection whose kind the text does not show (`c = c + ?`): the cluster places list
    /// elements by its own clock and reads the list for removals and indexes, so the result
    /// depends on the order the writes run in, whatever their timestamps.
    pub order_sensitive: bool,
    /// For `USE`: the keyspace, unquoted (case kept when it was double-quoted, lowered if not).
    pub keyspace: Option<String>,
    /// For SELECT: the table it reads (its keyspace when the statement names one).
    pub table: Option<tables::TableRef>,
    /// For writes: calls a function whose value the proxy generates (`now()`, `uuid()`, ...:
    /// see [`functions`]).
    pub calls_functions: bool,
}

impl Statement {
    /// Classifies a statement from its text.
    pub fn classify(text: &str) -> Self {
        let mut words = Lexer::new(text).filter(Token::is_identifier);
        let kind = match keyword(words.next().as_ref()) {
            Some("select") => StatementKind::Select,
            Some("insert") => StatementKind::Insert,
            Some("update") => StatementKind::Update,
            Some("delete") => StatementKind::Delete,
            Some("begin") => StatementKind::Batch,
            Some("use") => StatementKind::Use,
            Some("truncate") => StatementKind::Truncate,
            Some("grant" | "revoke") => StatementKind::AccessControl,
            Some("list" | "describe" | "desc") => StatementKind::ListOrDescribe,
            Some("create" | "alter" | "drop") => match keyword(words.next().as_ref()) {
                Some("role" | "user") => StatementKind::AccessControl,
                _ => StatementKind::Schema,
            },
            _ => StatementKind::Other,
        };
        let keyspace = match kind {
            StatementKind::Use => Lexer::new(text)
                .filter(Token::is_identifier)
                .nth(1)
                .map(|t| t.value().into_owned()),
            _ => None,
        };
        let (conditional, order_sensitive, calls_functions) = match kind {
            StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Batch => scan_write(text),
            _ => (false, false, false),
        };
        let table = match kind {
            StatementKind::Select => tables::read_table(text),
            _ => None,
        };
        Self {
            kind,
            conditional,
            keyspace,
            order_sensitive,
            table,
            calls_functions,
        }
    }
}

/// Whether a statement orders its rows (`ORDER BY`): then the order of rows is part of the
/// answer.
pub fn has_order_by(text: &str) -> bool {
    let mut previous_order = false;
    for token in Lexer::new(text) {
        if previous_order && token.is_word("by") {
            return true;
        }
        previous_order = token.is_word("order");
    }
    false
}

/// One pass over a write: whether it has an `IF` condition, whether it is order-sensitive
/// (see [`Statement::order_sensitive`]), and whether it calls a function the proxy evaluates. Looks for `c = c + X` / `c = c - X` whose operand `X`
/// is a list or unknown (a number is a counter, `{...}` a set or map: those commute),
/// `c = [...] + c` / `c = ? + c`, and `c[X]` with `X` not a string (a map key is).
fn scan_write(text: &str) -> (bool, bool, bool) {
    /// The last three tokens, newest first: enough context for the patterns above.
    #[derive(Clone, Copy)]
    struct Seen {
        kind: TokenKind,
        ident: bool,
    }
    let none = Seen {
        kind: TokenKind::Symbol(' '),
        ident: false,
    };
    let mut last = [none; 3];
    let (mut conditional, mut sensitive, mut calls) = (false, false, false);
    let mut scanner = functions::CallScanner::default();
    for token in Lexer::new(text) {
        conditional |= token.is_word("if");
        calls |= scanner.feed(&token).is_some();
        let [p1, p2, p3] = last;
        let arithmetic = |k: TokenKind| matches!(k, TokenKind::Symbol('+' | '-'));
        // `c = c +|- X`: decided by X.
        if arithmetic(p1.kind) && p2.ident && p3.kind == TokenKind::Symbol('=') {
            sensitive |= !matches!(token.kind, TokenKind::Number | TokenKind::Symbol('{'));
        }
        // `= [...] + c` (a prepend) or `= ? + c`.
        if token.kind == TokenKind::Symbol('+')
            && (p1.kind == TokenKind::Symbol(']')
                || (matches!(p1.kind, TokenKind::Marker | TokenKind::NamedMarker)
                    && p2.kind == TokenKind::Symbol('=')))
        {
            sensitive = true;
        }
        // `c[X]`: a list index unless X is a string (a map key).
        if p1.kind == TokenKind::Symbol('[') && p2.ident {
            sensitive |= token.kind != TokenKind::String;
        }
        last = [
            Seen {
                kind: token.kind,
                ident: token.is_identifier(),
            },
            p1,
            p2,
        ];
    }
    (conditional, sensitive, calls)
}

/// Whether a write updates a counter as its text shows: `c = c + N` or `c = c - N` with a
/// number `N` (CQL allows that arithmetic on counter columns only). `c = c + ?` is unknown
/// from the text alone (see [`Statement::order_sensitive`]).
pub fn updates_counter(text: &str) -> bool {
    // The last three tokens, newest first: `=`, `c`, `+|-`.
    let mut last: [Option<TokenKind>; 3] = [None; 3];
    let mut idents = [false; 3];
    for token in Lexer::new(text) {
        let arithmetic = matches!(last[0], Some(TokenKind::Symbol('+' | '-')));
        if arithmetic
            && idents[1]
            && last[2] == Some(TokenKind::Symbol('='))
            && token.kind == TokenKind::Number
        {
            return true;
        }
        last = [Some(token.kind), last[0], last[1]];
        idents = [token.is_identifier(), idents[0], idents[1]];
    }
    false
}

/// The words that decide a statement's kind, lower-case.
const KEYWORDS: [&str; 17] = [
    "select", "insert", "update", "delete", "begin", "use", "truncate", "grant", "revoke", "list",
    "describe", "desc", "create", "alter", "drop", "role", "user",
];

/// `token` as one of [`KEYWORDS`], compared without regard to case and without allocating
/// (every QUERY is classified). Quoted identifiers are never keywords.
fn keyword(token: Option<&Token<'_>>) -> Option<&'static str> {
    let token = token.filter(|t| t.kind == TokenKind::Word)?;
    KEYWORDS
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(token.raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(text: &str) -> StatementKind {
        Statement::classify(text).kind
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("SELECT * FROM t"), StatementKind::Select);
        assert_eq!(
            kind("  select now() from system.local"),
            StatementKind::Select
        );
        assert_eq!(
            kind("-- comment\nINSERT INTO t (a) VALUES (1)"),
            StatementKind::Insert
        );
        assert_eq!(
            kind("/* x */ update t set a = 1 where k = 1"),
            StatementKind::Update
        );
        assert_eq!(kind("DELETE FROM t WHERE k = 1"), StatementKind::Delete);
        assert_eq!(
            kind("BEGIN UNLOGGED BATCH INSERT INTO t (a) VALUES (1); APPLY BATCH"),
            StatementKind::Batch
        );
        assert_eq!(kind("TRUNCATE t"), StatementKind::Truncate);
        assert_eq!(
            kind("CREATE TABLE t (a int PRIMARY KEY)"),
            StatementKind::Schema
        );
        assert_eq!(
            kind("CREATE ROLE r WITH PASSWORD = 'x'"),
            StatementKind::AccessControl
        );
        assert_eq!(
            kind("GRANT SELECT ON ALL KEYSPACES TO r"),
            StatementKind::AccessControl
        );
        assert_eq!(kind("LIST ROLES"), StatementKind::ListOrDescribe);
        assert_eq!(kind(""), StatementKind::Other);
        assert_eq!(kind("; select"), StatementKind::Select);
        assert!(kind("SELECT 1").is_read());
        assert!(!kind("frobnicate").is_read());
    }

    #[test]
    fn conditional_writes() {
        let c = |t| Statement::classify(t).conditional;
        assert!(c("INSERT INTO t (k) VALUES (1) IF NOT EXISTS"));
        assert!(c("UPDATE t SET v = 2 WHERE k = 1 if v = 1"));
        assert!(c("DELETE FROM t WHERE k = 1 IF EXISTS"));
        assert!(c(
            "BEGIN BATCH UPDATE t SET v = 2 WHERE k = 1 IF v = 1; APPLY BATCH"
        ));
        assert!(!c("INSERT INTO t (k, v) VALUES (1, 'if only')"));
        assert!(!c("INSERT INTO t (k, \"if\") VALUES (1, 2)"));
        assert!(!c("UPDATE t SET v = 1 WHERE k = 1 -- if v = 0"));
        assert!(!c("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY)"));
        assert!(!c("INSERT INTO t (k, v) VALUES (1, $$ if $$)"));
        assert!(!c("INSERT INTO t (k, v) VALUES (1, 'it''s if')"));
    }

    #[test]
    fn counter_updates() {
        assert!(updates_counter("UPDATE t SET c = c + 1 WHERE k = 0"));
        assert!(updates_counter("update t set n=n-5, m = m + 2 where k = ?"));
        assert!(!updates_counter("UPDATE t SET c = c + ? WHERE k = 0"));
        assert!(!updates_counter("UPDATE t SET l = l + [1] WHERE k = 0"));
        assert!(!updates_counter("UPDATE t SET s = s + {1} WHERE k = 0"));
        assert!(!updates_counter("INSERT INTO t (k, v) VALUES (1, 2)"));
    }

    #[test]
    fn order_sensitive_writes() {
        let o = |t| Statement::classify(t).order_sensitive;
        // Lists: appends, prepends, removals, elements by index.
        assert!(o("UPDATE t SET l = l + [7] WHERE k = 1"));
        assert!(o("UPDATE t SET l = [7] + l WHERE k = 1"));
        assert!(o("UPDATE t SET l = l - [7] WHERE k = 1"));
        assert!(o("UPDATE t SET l[0] = 7 WHERE k = 1"));
        assert!(o("DELETE l[0] FROM t WHERE k = 1"));
        assert!(o("UPDATE t SET \"L\" = \"L\" + [1] WHERE k = 1"));
        // Unknown kind of collection: the safe side.
        assert!(o("UPDATE t SET c = c + ? WHERE k = ?"));
        assert!(o("UPDATE t SET c = ? + c WHERE k = ?"));
        assert!(o("UPDATE t SET c[?] = ? WHERE k = ?"));
        assert!(o(
            "BEGIN BATCH INSERT INTO t (k) VALUES (1); UPDATE t SET l = l + [1] WHERE k = 1; APPLY BATCH"
        ));
        // Sets, maps and counters commute; whole values are last-write-wins.
        assert!(!o(
            "UPDATE t SET s = s + {'x'}, m = m + {'a': 'b'} WHERE k = 1"
        ));
        assert!(!o("UPDATE t SET s = s - {'x'} WHERE k = 1"));
        assert!(!o("UPDATE t SET m['a'] = 'b' WHERE k = 1"));
        assert!(!o("DELETE m['a'] FROM t WHERE k = 1"));
        assert!(!o("UPDATE t SET c = c + 1, d = d - 2 WHERE k = 1"));
        assert!(!o("INSERT INTO t (k, l) VALUES (1, [1, 2])"));
        assert!(!o("UPDATE t SET l = [1, 2], v = 3 WHERE k = 1"));
        assert!(!o("UPDATE t SET v = 'l + [1]' WHERE k = 1"));
        assert!(!o("SELECT l[0] FROM t"));
    }

    #[test]
    fn writes_calling_functions() {
        let f = |t| Statement::classify(t).calls_functions;
        assert!(f("INSERT INTO t (k, v) VALUES (1, now())"));
        assert!(f(
            "UPDATE t SET v = 1 WHERE k = 1 IF ts < currentTimestamp()"
        ));
        assert!(f("BEGIN BATCH DELETE FROM t WHERE k = uuid(); APPLY BATCH"));
        assert!(!f("INSERT INTO t (k, v) VALUES (1, 'now()')"));
        assert!(!f("INSERT INTO t (k, v) VALUES (1, ks.now())"));
        assert!(!f("SELECT now() FROM system.local"));
        assert!(!f("CREATE TABLE t (k uuid PRIMARY KEY, v timeuuid)"));
    }

    #[test]
    fn use_keyspace() {
        let ks = |t| Statement::classify(t).keyspace;
        assert_eq!(ks("USE Shop"), Some("shop".into()));
        assert_eq!(ks("use \"MixedCase\";"), Some("MixedCase".into()));
        assert_eq!(ks("USE \"we\"\"ird\""), Some("we\"ird".into()));
        assert_eq!(ks("SELECT 1"), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = Statement::classify(&text);
        }

        #[test]
        fn never_panics_on_cql_fragments(parts in proptest::collection::vec(
            prop::sample::select(vec!["'", "\"", "$$", "--", "/*", "*/", "//", "\n", "IF", "select", "é", " ", "x"]), 0..20)) {
            let _ = Statement::classify(&parts.concat());
        }
    }
}
