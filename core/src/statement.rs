//! What a CQL statement is, read off its text without a full parser: the kind of statement,
//! whether it is conditional (a lightweight transaction), and the keyspace of a `USE`.
//!
//! The proxy only needs to know where a statement goes and whether it may carry a client-side
//! write timestamp, so a tokenizer that understands comments, string literals, quoted
//! identifiers and dollar-quoted strings is enough; anything it does not recognize is treated
//! as a write, which is the safe side for a dual-write proxy.

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
    /// For `USE`: the keyspace, unquoted (case kept when it was double-quoted, lowered if not).
    pub keyspace: Option<String>,
}

impl Statement {
    /// Classifies a statement from its text.
    pub fn classify(text: &str) -> Self {
        let mut tokens = Tokens::new(text);
        let first = keyword(tokens.next_word());
        let kind = match first {
            Some("select") => StatementKind::Select,
            Some("insert") => StatementKind::Insert,
            Some("update") => StatementKind::Update,
            Some("delete") => StatementKind::Delete,
            Some("begin") => StatementKind::Batch,
            Some("use") => StatementKind::Use,
            Some("truncate") => StatementKind::Truncate,
            Some("grant" | "revoke") => StatementKind::AccessControl,
            Some("list" | "describe" | "desc") => StatementKind::ListOrDescribe,
            Some("create" | "alter" | "drop") => match keyword(tokens.clone().next_word()) {
                Some("role" | "user") => StatementKind::AccessControl,
                _ => StatementKind::Schema,
            },
            _ => StatementKind::Other,
        };
        let keyspace = match kind {
            StatementKind::Use => Tokens::new(text).nth_identifier(1),
            _ => None,
        };
        let conditional = matches!(
            kind,
            StatementKind::Insert
                | StatementKind::Update
                | StatementKind::Delete
                | StatementKind::Batch
        ) && Tokens::new(text).any_word("if");
        Self {
            kind,
            conditional,
            keyspace,
        }
    }
}

/// The words that decide a statement's kind, lower-case.
const KEYWORDS: [&str; 17] = [
    "select", "insert", "update", "delete", "begin", "use", "truncate", "grant", "revoke", "list",
    "describe", "desc", "create", "alter", "drop", "role", "user",
];

/// `word` as one of [`KEYWORDS`], compared without regard to case and without allocating
/// (every QUERY is classified).
fn keyword(word: Option<&str>) -> Option<&'static str> {
    let word = word?;
    KEYWORDS
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(word))
}

/// A minimal CQL tokenizer: yields words (identifiers and keywords, lower-cased unless
/// double-quoted) and skips everything else.
#[derive(Clone)]
struct Tokens<'a> {
    rest: &'a str,
}

enum Token<'a> {
    Word(&'a str),
    Quoted(String),
    Other,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        loop {
            let s = self.rest.trim_start();
            self.rest = s;
            if s.starts_with("--") || s.starts_with("//") {
                self.rest = s.find('\n').map_or("", |i| &s[i + 1..]);
                continue;
            }
            if let Some(body) = s.strip_prefix("/*") {
                self.rest = body.find("*/").map_or("", |i| &body[i + 2..]);
                continue;
            }
            break;
        }
        let s = self.rest;
        let c = s.chars().next()?;
        if c.is_ascii_alphabetic() || c == '_' {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            self.rest = &s[end..];
            return Some(Token::Word(&s[..end]));
        }
        if c == '\'' {
            self.rest = skip_quoted(&s[1..], '\'');
            return Some(Token::Other);
        }
        if c == '"' {
            let (ident, rest) = quoted_identifier(&s[1..]);
            self.rest = rest;
            return Some(Token::Quoted(ident));
        }
        if let Some(body) = s.strip_prefix("$$") {
            self.rest = body.find("$$").map_or("", |i| &body[i + 2..]);
            return Some(Token::Other);
        }
        self.rest = &s[c.len_utf8()..];
        Some(Token::Other)
    }

    fn next_word(&mut self) -> Option<&'a str> {
        loop {
            match self.next_token()? {
                Token::Word(w) => return Some(w),
                Token::Quoted(_) | Token::Other => continue,
            }
        }
    }

    fn any_word(mut self, word: &str) -> bool {
        while let Some(t) = self.next_token() {
            if let Token::Word(w) = t {
                if w.eq_ignore_ascii_case(word) {
                    return true;
                }
            }
        }
        false
    }

    /// The `n`th identifier-like token (0-based), unquoted; unquoted ones are lower-cased.
    fn nth_identifier(mut self, n: usize) -> Option<String> {
        let mut seen = 0;
        while let Some(t) = self.next_token() {
            let ident = match t {
                Token::Word(w) => w.to_ascii_lowercase(),
                Token::Quoted(q) => q,
                Token::Other => continue,
            };
            if seen == n {
                return Some(ident);
            }
            seen += 1;
        }
        None
    }
}

/// Skips a quoted string whose opening quote was consumed; a doubled quote is an escaped one.
fn skip_quoted(s: &str, quote: char) -> &str {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|&(_, n)| n == quote) {
                chars.next();
                continue;
            }
            return &s[i + 1..];
        }
    }
    ""
}

fn quoted_identifier(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if chars.peek().is_some_and(|&(_, n)| n == '"') {
                chars.next();
                out.push('"');
                continue;
            }
            return (out, &s[i + 1..]);
        }
        out.push(c);
    }
    (out, "")
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
