//! Calls of the functions each cluster would evaluate on its own: `now()`, `uuid()`,
//! `currentTimeUUID()`, `currentTimestamp()`, `currentDate()`, `currentTime()` and their
//! snake-case names (`current_timeuuid()`, ...).
//!
//! Sent as they are, each cluster computes its own value and the clusters store different
//! data. The proxy evaluates each call once instead: in statement text it writes the value as a
//! literal (see [`with_literals`]); in a statement to prepare it puts a bind marker in its
//! place (see [`with_markers`]) and binds the value at each execution. Both work on the
//! [`lexer`](super::lexer)'s tokens, so string literals, comments and quoted identifiers never
//! yield a call.
//!
//! A call is the function's name (an unquoted word in any case, or a quoted identifier equal
//! to its lower-case name), optionally qualified with the `system` keyspace, followed by `(`
//! and `)`. A name qualified with another keyspace is a user-defined function, left alone.

use std::ops::Range;

use super::lexer::{Lexer, Token, TokenKind};

/// A function whose value the proxy generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `now()`, `currentTimeUUID()`, `current_timeuuid()`: a time-based (version 1) UUID.
    TimeUuid,
    /// `uuid()`: a random (version 4) UUID.
    RandomUuid,
    /// `currentTimestamp()`, `current_timestamp()`: milliseconds since the epoch.
    Timestamp,
    /// `currentDate()`, `current_date()`: the UTC date.
    Date,
    /// `currentTime()`, `current_time()`: the UTC time of day.
    Time,
}

/// Every name Cassandra 5.0 knows these functions by, lower-case.
const NAMES: [(&str, Function); 10] = [
    ("now", Function::TimeUuid),
    ("currenttimeuuid", Function::TimeUuid),
    ("current_timeuuid", Function::TimeUuid),
    ("uuid", Function::RandomUuid),
    ("currenttimestamp", Function::Timestamp),
    ("current_timestamp", Function::Timestamp),
    ("currentdate", Function::Date),
    ("current_date", Function::Date),
    ("currenttime", Function::Time),
    ("current_time", Function::Time),
];

impl Function {
    /// The function a token names, if any: an unquoted word compared without regard to case,
    /// or a quoted identifier written in lower case (`"now"`; `"NOW"` names another function).
    pub fn named_by(token: &Token<'_>) -> Option<Self> {
        let name = match token.kind {
            TokenKind::Word => token.raw,
            TokenKind::QuotedIdent => token.raw.strip_prefix('"')?.strip_suffix('"')?,
            _ => return None,
        };
        // Most words are none of these: rejected by length and first letter, as every
        // write's tokens pass here.
        let first = name.as_bytes().first().map(u8::to_ascii_lowercase);
        if !matches!(name.len(), 3 | 4 | 10..=17) || !matches!(first, Some(b'n' | b'c' | b'u')) {
            return None;
        }
        let exact = token.kind == TokenKind::QuotedIdent;
        NAMES
            .iter()
            .find(|(n, _)| {
                if exact {
                    *n == name
                } else {
                    n.eq_ignore_ascii_case(name)
                }
            })
            .map(|&(_, f)| f)
    }

    /// The CQL type of its value, as used in type hints (`(timeuuid)?`).
    pub const fn cql_type(self) -> &'static str {
        match self {
            Self::TimeUuid => "timeuuid",
            Self::RandomUuid => "uuid",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
            Self::Time => "time",
        }
    }

    /// A stable name for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::TimeUuid => "now",
            Self::RandomUuid => "uuid",
            Self::Timestamp => "current_timestamp",
            Self::Date => "current_date",
            Self::Time => "current_time",
        }
    }
}

/// One call in a statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub function: Function,
    /// From the first byte of the name (or of `system.`) to the closing parenthesis.
    pub span: Range<usize>,
}

/// What the scanner remembers of a token.
#[derive(Debug, Clone, Copy)]
struct Seen {
    kind: TokenKind,
    function: Option<Function>,
    /// The word `system` or the quoted identifier `"system"`.
    system: bool,
    start: usize,
}

const NOTHING: Seen = Seen {
    kind: TokenKind::Symbol(' '),
    function: None,
    system: false,
    start: 0,
};

/// Finds calls in a stream of tokens, one token at a time, so that a pass over a statement
/// made for other reasons can find them too.
#[derive(Debug, Clone)]
pub struct CallScanner {
    /// The last four tokens, newest first: `system . name ( )` is five with the current one.
    last: [Seen; 4],
}

impl Default for CallScanner {
    fn default() -> Self {
        Self { last: [NOTHING; 4] }
    }
}

impl CallScanner {
    /// Takes the next token; returns the call it closes, if any.
    pub fn feed(&mut self, token: &Token<'_>) -> Option<Call> {
        let [p1, p2, p3, p4] = self.last;
        let mut call = None;
        if token.is_symbol(')') && p1.kind == TokenKind::Symbol('(') {
            if let Some(function) = p2.function {
                let start = if p3.kind == TokenKind::Symbol('.') {
                    p4.system.then_some(p4.start)
                } else {
                    Some(p2.start)
                };
                call = start.map(|start| Call {
                    function,
                    span: start..token.span.end,
                });
            }
        }
        let seen = Seen {
            kind: token.kind,
            function: Function::named_by(token),
            system: token.is_word("system") || (token.raw == "\"system\""),
            start: token.span.start,
        };
        self.last = [seen, p1, p2, p3];
        call
    }
}

/// Every call in `text`, in order.
pub fn calls(text: &str) -> Vec<Call> {
    let mut scanner = CallScanner::default();
    Lexer::new(text).filter_map(|t| scanner.feed(&t)).collect()
}

/// `text` with each call's span replaced by what `replace` returns for it. A replacement is
/// followed by a space when the next character could otherwise join it into one token.
fn replaced(text: &str, calls: &[Call], mut replace: impl FnMut(usize, &Call) -> String) -> String {
    let mut out = String::with_capacity(text.len() + calls.len() * 48);
    let mut copied = 0;
    for (i, call) in calls.iter().enumerate() {
        out.push_str(text.get(copied..call.span.start).unwrap_or(""));
        out.push_str(&replace(i, call));
        let next = text
            .get(call.span.end..)
            .and_then(|rest| rest.chars().next());
        if next.is_some_and(|c| !(c.is_whitespace() || matches!(c, ')' | ',' | ';'))) {
            out.push(' ');
        }
        copied = call.span.end;
    }
    out.push_str(text.get(copied..).unwrap_or(""));
    out
}

/// `text` with each call replaced by the literal `literal` gives for its function (called once
/// per call, in order), or `None` when it has no call.
pub fn with_literals(text: &str, literal: impl FnMut(Function) -> String) -> Option<String> {
    let found = calls(text);
    if found.is_empty() {
        return None;
    }
    let mut literal = literal;
    Some(replaced(text, &found, |_, call| literal(call.function)))
}

/// A bind marker the proxy put in place of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedMarker {
    /// Its position among the bind markers of the rewritten statement.
    pub index: usize,
    pub function: Function,
    /// The name values are bound by when the client sends names (flag 0x40): the marker's own
    /// name in a statement with named markers, otherwise what the cluster calls the marker in
    /// its PREPARED metadata (set when that answer arrives).
    pub name: String,
}

/// A statement to prepare with its calls replaced by bind markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithMarkers {
    pub text: String,
    /// In the order of the markers.
    pub markers: Vec<GeneratedMarker>,
}

/// The prefix of the names of the markers the proxy adds to statements with named markers.
const MARKER_NAME: &str = "cqlmirror_generated_";

/// `text` with each call replaced by a bind marker with a type hint (a marker inside a function
/// call such as `toTimestamp(?)` would be ambiguous without it): named (`:name`) when the
/// statement uses named markers, `?` otherwise. `None` when it has no call.
pub fn with_markers(text: &str) -> Option<WithMarkers> {
    let mut scanner = CallScanner::default();
    // The position of each call among the markers, and the names already taken.
    let mut found = Vec::new();
    let mut user_markers = 0;
    let mut named = false;
    let mut taken = Vec::new();
    for token in Lexer::new(text) {
        match token.kind {
            TokenKind::Marker => user_markers += 1,
            TokenKind::NamedMarker => {
                user_markers += 1;
                named = true;
                taken.push(token.value().into_owned());
            }
            _ => {}
        }
        if let Some(call) = scanner.feed(&token) {
            found.push((user_markers + found.len(), call));
        }
    }
    if found.is_empty() {
        return None;
    }
    let mut next_name = 0usize;
    let mut markers = Vec::with_capacity(found.len());
    for (index, call) in &found {
        let name = if named {
            loop {
                let candidate = format!("{MARKER_NAME}{next_name}");
                next_name += 1;
                if !taken.contains(&candidate) {
                    break candidate;
                }
            }
        } else {
            String::new()
        };
        markers.push(GeneratedMarker {
            index: *index,
            function: call.function,
            name,
        });
    }
    let calls: Vec<Call> = found.into_iter().map(|(_, call)| call).collect();
    let text = replaced(text, &calls, |i, call| {
        let hint = call.function.cql_type();
        match markers.get(i) {
            Some(marker) if named => format!("({hint}):{}", marker.name),
            _ => format!("({hint})?"),
        }
    });
    Some(WithMarkers { text, markers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn literal(f: Function) -> String {
        format!("<{}>", f.label())
    }

    fn rewrite(text: &str) -> String {
        with_literals(text, literal).unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn corpus_of_statements() {
        let cases = [
            // Every name, any case.
            (
                "INSERT INTO t (k, a, b, c) VALUES (now(), NOW(), currentTimeUUID(), current_timeuuid())",
                "INSERT INTO t (k, a, b, c) VALUES (<now>, <now>, <now>, <now>)",
            ),
            (
                "INSERT INTO t (k, a, b, c, d) VALUES (uuid(), currentTimestamp(), currentdate(), CURRENT_TIME(), current_date())",
                "INSERT INTO t (k, a, b, c, d) VALUES (<uuid>, <current_timestamp>, <current_date>, <current_time>, <current_date>)",
            ),
            (
                "UPDATE t SET ts = current_timestamp(), ti = currenttime() WHERE k = 1",
                "UPDATE t SET ts = <current_timestamp>, ti = <current_time> WHERE k = 1",
            ),
            // Nested calls: only the inner one.
            (
                "INSERT INTO t (k, ts) VALUES (1, toTimestamp(now()))",
                "INSERT INTO t (k, ts) VALUES (1, toTimestamp(<now>))",
            ),
            (
                "INSERT INTO t (k, d) VALUES (1, toDate(currentTimestamp()))",
                "INSERT INTO t (k, d) VALUES (1, toDate(<current_timestamp>))",
            ),
            // Qualified: `system.` is the function; another keyspace is a user function.
            (
                "INSERT INTO t (k, a, b) VALUES (system.now(), ks.now(), \"system\".uuid())",
                "INSERT INTO t (k, a, b) VALUES (<now>, ks.now(), <uuid>)",
            ),
            // Quoted identifiers: the exact lower-case name only.
            (
                "INSERT INTO t (k, a, b) VALUES (1, \"now\"(), \"NOW\"())",
                "INSERT INTO t (k, a, b) VALUES (1, <now>, \"NOW\"())",
            ),
            // Inside literals, comments and quoted identifiers: nothing.
            (
                "INSERT INTO t (k, v, \"now()\") VALUES (1, 'now()', $$uuid()$$) -- now()\n",
                "INSERT INTO t (k, v, \"now()\") VALUES (1, 'now()', $$uuid()$$) -- now()\n",
            ),
            (
                "UPDATE t /* now() */ SET v = 'it''s now()' WHERE k = uuid() // uuid()",
                "UPDATE t /* now() */ SET v = 'it''s now()' WHERE k = <uuid> // uuid()",
            ),
            // Columns and types named like the functions.
            (
                "INSERT INTO t (now, uuid) VALUES ((uuid)?, now())",
                "INSERT INTO t (now, uuid) VALUES ((uuid)?, <now>)",
            ),
            (
                "CREATE TABLE t (id uuid PRIMARY KEY, now timeuuid)",
                "CREATE TABLE t (id uuid PRIMARY KEY, now timeuuid)",
            ),
            // Arguments are not these functions.
            (
                "INSERT INTO t (k) VALUES (now(1))",
                "INSERT INTO t (k) VALUES (now(1))",
            ),
            // Spaces and comments inside a call.
            (
                "INSERT INTO t (k) VALUES (now /* c */ ( ))",
                "INSERT INTO t (k) VALUES (<now>)",
            ),
            // Batches and conditions.
            (
                "BEGIN BATCH INSERT INTO t (k, v) VALUES (1, now()); UPDATE t SET v = now() WHERE k = 2 IF v < currentTimeUUID(); APPLY BATCH",
                "BEGIN BATCH INSERT INTO t (k, v) VALUES (1, <now>); UPDATE t SET v = <now> WHERE k = 2 IF v < <now>; APPLY BATCH",
            ),
            (
                "DELETE FROM t WHERE k = 1 IF ts < currentTimestamp()",
                "DELETE FROM t WHERE k = 1 IF ts < <current_timestamp>",
            ),
            // Something that could join the replacement is kept apart.
            (
                "INSERT INTO t (k) VALUES (now()x)",
                "INSERT INTO t (k) VALUES (<now> x)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(rewrite(text), expected, "{text}");
        }
        assert_eq!(with_literals("SELECT 1", literal), None);
    }

    #[test]
    fn each_call_its_own_value() {
        let mut n = 0;
        let out = with_literals("INSERT INTO t (k, a, b) VALUES (1, now(), now())", |_| {
            n += 1;
            format!("v{n}")
        });
        assert_eq!(
            out.as_deref(),
            Some("INSERT INTO t (k, a, b) VALUES (1, v1, v2)")
        );
    }

    #[test]
    fn positional_markers() {
        let w = with_markers(
            "UPDATE t SET a = ?, b = toTimestamp(now()) WHERE k = ? IF c < uuid() AND d = ?",
        )
        .unwrap();
        assert_eq!(
            w.text,
            "UPDATE t SET a = ?, b = toTimestamp((timeuuid)?) WHERE k = ? IF c < (uuid)? AND d = ?"
        );
        assert_eq!(
            w.markers,
            vec![
                GeneratedMarker {
                    index: 1,
                    function: Function::TimeUuid,
                    name: String::new()
                },
                GeneratedMarker {
                    index: 3,
                    function: Function::RandomUuid,
                    name: String::new()
                },
            ]
        );
        assert_eq!(with_markers("INSERT INTO t (k) VALUES (?)"), None);
    }

    #[test]
    fn named_markers_get_names_nobody_uses() {
        let w = with_markers(
            "INSERT INTO t (k, a, b) VALUES (:cqlmirror_generated_0, now(), currentDate()) USING TTL :ttl",
        )
        .unwrap();
        assert_eq!(
            w.text,
            "INSERT INTO t (k, a, b) VALUES (:cqlmirror_generated_0, (timeuuid):cqlmirror_generated_1, (date):cqlmirror_generated_2) USING TTL :ttl"
        );
        let names: Vec<_> = w
            .markers
            .iter()
            .map(|m| (m.index, m.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![(1, "cqlmirror_generated_1"), (2, "cqlmirror_generated_2")]
        );
    }

    /// The tokens of `text` outside the calls, and the calls' spans.
    fn tokens_outside(text: &str, spans: &[Range<usize>]) -> Vec<(TokenKind, String)> {
        Lexer::new(text)
            .filter(|t| {
                !spans
                    .iter()
                    .any(|s| t.span.start < s.end && t.span.end > s.start)
            })
            .map(|t| (t.kind, t.raw.to_owned()))
            .collect()
    }

    /// Texts made of the pieces the lexer and the scanner care about.
    fn cql_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec![
                "now",
                "NOW",
                "uuid",
                "currentTimeUUID",
                "current_date",
                "\"now\"",
                "system",
                "ks",
                ".",
                "(",
                ")",
                "()",
                "?",
                ":n",
                "'",
                "''",
                "\"",
                "$$",
                "--",
                "/*",
                "*/",
                "//",
                "\n",
                " ",
                "x",
                "1",
                "1e",
                "-",
                "+",
                ",",
                ";",
                "=",
                "é",
                "INSERT",
                "IF",
            ]),
            0..30,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = calls(&text);
            let _ = with_markers(&text);
            let _ = with_literals(&text, literal);
        }

        #[test]
        fn only_the_calls_change(text in cql_text()) {
            let found = calls(&text);
            // Literals of the shapes the proxy writes, with characters that could join.
            let mut values = ["(timeuuid)5d1f2c40-34a9-11ef-8000-01234567890e", "(date)'2026-12-07'", "(timestamp)1765123456789"].iter().cycle();
            let out = with_literals(&text, |_| (*values.next().unwrap_or(&"")).to_owned())
                .unwrap_or_else(|| text.clone());
            // Where the replacements went in the output: re-derive by walking the same way.
            let mut shift: isize = 0;
            let mut out_spans = Vec::new();
            let mut values = ["(timeuuid)5d1f2c40-34a9-11ef-8000-01234567890e", "(date)'2026-12-07'", "(timestamp)1765123456789"].iter().cycle();
            for call in &found {
                let value = values.next().unwrap_or(&"");
                let start = (call.span.start as isize + shift) as usize;
                let padded = text[call.span.end..].chars().next()
                    .is_some_and(|c| !(c.is_whitespace() || matches!(c, ')' | ',' | ';')));
                let len = value.len() + usize::from(padded);
                out_spans.push(start..start + len);
                shift += len as isize - (call.span.end - call.span.start) as isize;
            }
            prop_assert_eq!(tokens_outside(&text, &found.iter().map(|c| c.span.clone()).collect::<Vec<_>>()),
                tokens_outside(&out, &out_spans));
            // The markers' rewrite keeps them too, and finds no call in what it wrote.
            if let Some(w) = with_markers(&text) {
                prop_assert!(calls(&w.text).is_empty());
                prop_assert_eq!(w.markers.len(), found.len());
            }
        }
    }
}
