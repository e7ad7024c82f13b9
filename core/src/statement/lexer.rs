//! A CQL lexer: the statement text as tokens, each with its place in the text.
//!
//! It knows what can hide a word the proxy looks for: comments (`--`, `//`, `/* */`), string
//! literals (`'...'` with `''` for a quote, and `$$...$$`), quoted identifiers (`"..."` with
//! `""`), and numbers. Everything else is a one-character symbol. It never fails: an
//! unterminated string or comment runs to the end of the text, as Cassandra would reject it
//! anyway; what the proxy decides from such a text stays on the safe side.

use std::borrow::Cow;
use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or unquoted identifier (case-insensitive).
    Word,
    /// A double-quoted identifier (case-sensitive).
    QuotedIdent,
    /// A string literal, single-quoted or between `$$`.
    String,
    /// A number (integer, decimal, exponent; a leading `-` is a separate symbol), or the digits
    /// and letters of a hex blob or an unquoted UUID literal.
    Number,
    /// `?`
    Marker,
    /// `:name`
    NamedMarker,
    /// Any other character: `(`, `)`, `,`, `.`, `*`, `=`, `{`, `}`, `:`, `;`, ...
    Symbol(char),
}

/// One token: its kind and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    /// The token as written, quotes included.
    pub raw: &'a str,
    /// Byte offsets of `raw` in the statement text.
    pub span: Range<usize>,
}

impl<'a> Token<'a> {
    /// Whether this is the word `word` (case-insensitive; never a quoted identifier).
    pub fn is_word(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.raw.eq_ignore_ascii_case(word)
    }

    pub fn is_symbol(&self, symbol: char) -> bool {
        self.kind == TokenKind::Symbol(symbol)
    }

    /// The token's value: an identifier as CQL resolves it (unquoted: lower-case; quoted:
    /// as written, `""` unescaped), a string literal without its quotes (`''` unescaped),
    /// a named marker without its colon; anything else as written.
    pub fn value(&self) -> Cow<'a, str> {
        match self.kind {
            TokenKind::Word => {
                if self.raw.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(self.raw.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(self.raw)
                }
            }
            TokenKind::QuotedIdent => unquote(self.raw, '"'),
            TokenKind::String => match self.raw.strip_prefix("$$") {
                Some(body) => Cow::Borrowed(body.strip_suffix("$$").unwrap_or(body)),
                None => unquote(self.raw, '\''),
            },
            TokenKind::NamedMarker => Cow::Borrowed(&self.raw[1..]),
            _ => Cow::Borrowed(self.raw),
        }
    }

    /// Whether the token names an identifier (a word or a quoted identifier).
    pub fn is_identifier(&self) -> bool {
        matches!(self.kind, TokenKind::Word | TokenKind::QuotedIdent)
    }
}

/// `raw` without its surrounding `quote`s, with doubled quotes made single.
fn unquote(raw: &str, quote: char) -> Cow<'_, str> {
    let inner = raw.strip_prefix(quote).unwrap_or(raw);
    let inner = inner.strip_suffix(quote).unwrap_or(inner);
    let doubled = [quote, quote];
    let doubled: String = doubled.iter().collect();
    if inner.contains(&doubled) {
        Cow::Owned(inner.replace(&doubled, &quote.to_string()))
    } else {
        Cow::Borrowed(inner)
    }
}

/// The tokens of a statement, comments and white space skipped.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    /// Skips white space and comments.
    fn skip_trivia(&mut self) {
        loop {
            let rest = &self.text[self.at..];
            let trimmed = rest.trim_start();
            self.at += rest.len() - trimmed.len();
            if trimmed.starts_with("--") || trimmed.starts_with("//") {
                self.at += trimmed.find('\n').map_or(trimmed.len(), |i| i + 1);
            } else if let Some(body) = trimmed.strip_prefix("/*") {
                self.at += 2 + body.find("*/").map_or(body.len(), |i| i + 2);
            } else {
                return;
            }
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let start = self.at;
        let rest = &self.text[start..];
        let c = rest.chars().next()?;
        let (kind, len) = if c.is_ascii_alphabetic() || c == '_' {
            (TokenKind::Word, word_len(rest))
        } else if c.is_ascii_digit() {
            (TokenKind::Number, number_len(rest))
        } else if c == '\'' {
            (TokenKind::String, quoted_len(rest, '\''))
        } else if c == '"' {
            (TokenKind::QuotedIdent, quoted_len(rest, '"'))
        } else if let Some(body) = rest.strip_prefix("$$") {
            (
                TokenKind::String,
                2 + body.find("$$").map_or(body.len(), |i| i + 2),
            )
        } else if c == '?' {
            (TokenKind::Marker, 1)
        } else if c == ':' && rest[1..].starts_with(|n: char| n.is_ascii_alphabetic() || n == '_') {
            (TokenKind::NamedMarker, 1 + word_len(&rest[1..]))
        } else if c == ':' && rest[1..].starts_with('"') {
            (TokenKind::NamedMarker, 1 + quoted_len(&rest[1..], '"'))
        } else {
            (TokenKind::Symbol(c), c.len_utf8())
        };
        self.at = start + len;
        Some(Token {
            kind,
            raw: &self.text[start..self.at],
            span: start..self.at,
        })
    }
}

fn word_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// Digits, a decimal part, an exponent, and the letters of hex blobs and UUIDs (`0xcafe`,
/// `123e4567`): one token, so that no part of a literal is taken for a word.
fn number_len(s: &str) -> usize {
    let mut len = 0;
    let bytes = s.as_bytes();
    while len < bytes.len() {
        let b = bytes[len];
        let exponent_sign = (b == b'+' || b == b'-')
            && len > 0
            && matches!(bytes[len - 1], b'e' | b'E')
            && bytes[..len]
                .iter()
                .all(|d| d.is_ascii_digit() || matches!(d, b'.' | b'e' | b'E'));
        let decimal_point = b == b'.' && bytes.get(len + 1).is_some_and(u8::is_ascii_digit);
        if b.is_ascii_alphanumeric() || b == b'_' || exponent_sign || decimal_point {
            len += 1;
        } else {
            break;
        }
    }
    len
}

/// Length of a quoted token starting at its opening quote; a doubled quote is part of it.
fn quoted_len(s: &str, quote: char) -> usize {
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|&(_, n)| n == quote) {
                chars.next();
                continue;
            }
            return i + 1;
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(text: &str) -> Vec<(TokenKind, String)> {
        Lexer::new(text)
            .map(|t| (t.kind, t.value().into_owned()))
            .collect()
    }

    #[test]
    fn tokens_and_values() {
        use TokenKind::*;
        assert_eq!(
            kinds("SELECT \"My\"\"Col\" AS x, count(*) FROM system.local WHERE key = 'lo''cal'"),
            vec![
                (Word, "select".into()),
                (QuotedIdent, "My\"Col".into()),
                (Word, "as".into()),
                (Word, "x".into()),
                (Symbol(','), ",".into()),
                (Word, "count".into()),
                (Symbol('('), "(".into()),
                (Symbol('*'), "*".into()),
                (Symbol(')'), ")".into()),
                (Word, "from".into()),
                (Word, "system".into()),
                (Symbol('.'), ".".into()),
                (Word, "local".into()),
                (Word, "where".into()),
                (Word, "key".into()),
                (Symbol('='), "=".into()),
                (String, "lo'cal".into()),
            ]
        );
        assert_eq!(
            kinds("-- c\nWHERE a = ? AND b = :name /* x */ AND c = $$ d $$ // e"),
            vec![
                (Word, "where".into()),
                (Word, "a".into()),
                (Symbol('='), "=".into()),
                (Marker, "?".into()),
                (Word, "and".into()),
                (Word, "b".into()),
                (Symbol('='), "=".into()),
                (NamedMarker, "name".into()),
                (Word, "and".into()),
                (Word, "c".into()),
                (Symbol('='), "=".into()),
                (String, " d ".into()),
            ]
        );
        assert_eq!(
            kinds("1.5e-3 0xCAFE 550e8400-e29b"),
            vec![
                (Number, "1.5e-3".into()),
                (Number, "0xCAFE".into()),
                (Number, "550e8400".into()),
                (Symbol('-'), "-".into()),
                (Word, "e29b".into()),
            ]
        );
    }

    #[test]
    fn spans_point_into_the_text() {
        let text = "INSERT INTO t (k) VALUES ('a''b')";
        for token in Lexer::new(text) {
            assert_eq!(&text[token.span.clone()], token.raw);
        }
    }

    #[test]
    fn unterminated_runs_to_the_end() {
        assert_eq!(kinds("'abc"), vec![(TokenKind::String, "abc".into())]);
        assert_eq!(kinds("/* x"), vec![]);
        assert_eq!(kinds("\"ab"), vec![(TokenKind::QuotedIdent, "ab".into())]);
    }

    proptest! {
        #[test]
        fn covers_the_text_without_overlap(text in "\\PC{0,60}") {
            let mut last = 0;
            for token in Lexer::new(&text) {
                prop_assert!(token.span.start >= last);
                prop_assert!(token.span.end > token.span.start);
                prop_assert_eq!(&text[token.span.clone()], token.raw);
                last = token.span.end;
            }
        }
    }
}
