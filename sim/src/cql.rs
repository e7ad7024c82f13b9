//! The few CQL statements the simulation speaks, written by simulated clients and parsed by
//! simulated clusters: a key-value table `ks.t (k int PRIMARY KEY, v text)`.
//!
//! ```text
//! INSERT INTO [ks.]t (k, v) VALUES (<int> | ?, '<text>' | ?)
//! SELECT v [AS <alias>] FROM [ks.]t WHERE k = <int> | ?
//! USE <keyspace>
//! ```

use std::fmt::Write as _;

/// The keyspace of the simulated table.
pub const KEYSPACE: &str = "ks";
/// The simulated table.
pub const TABLE: &str = "t";

/// The prepared form of an insert.
pub const INSERT_PREPARED: &str = "INSERT INTO ks.t (k, v) VALUES (?, ?)";
/// The prepared form of a read.
pub const SELECT_PREPARED: &str = "SELECT v FROM ks.t WHERE k = ?";
/// The prepared insert without a keyspace (after `USE ks`).
pub const INSERT_PREPARED_UNQUALIFIED: &str = "INSERT INTO t (k, v) VALUES (?, ?)";
/// The prepared read without a keyspace (after `USE ks`).
pub const SELECT_PREPARED_UNQUALIFIED: &str = "SELECT v FROM t WHERE k = ?";

/// The table's name, with the keyspace or without (after `USE ks`).
fn table(qualified: bool) -> String {
    if qualified {
        format!("{KEYSPACE}.{TABLE}")
    } else {
        TABLE.to_owned()
    }
}

/// A literal or a bind marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Int(i64),
    Text(String),
    Marker,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Insert {
        keyspace: Option<String>,
        key: Term,
        value: Term,
    },
    Select {
        keyspace: Option<String>,
        alias: Option<String>,
        key: Term,
    },
    Use {
        keyspace: String,
    },
}

impl Stmt {
    /// Bind markers, in order.
    pub fn markers(&self) -> usize {
        let count = |t: &Term| usize::from(*t == Term::Marker);
        match self {
            Self::Insert { key, value, .. } => count(key) + count(value),
            Self::Select { key, .. } => count(key),
            Self::Use { .. } => 0,
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, Self::Insert { .. })
    }
}

/// `INSERT INTO ks.t (k, v) VALUES (key, 'value')`, quotes in `value` escaped.
pub fn insert(key: i64, value: &str) -> String {
    insert_into(true, key, value)
}

/// An insert into `ks.t` (`qualified`) or `t`.
pub fn insert_into(qualified: bool, key: i64, value: &str) -> String {
    format!(
        "INSERT INTO {} (k, v) VALUES ({key}, '{}')",
        table(qualified),
        value.replace('\'', "''")
    )
}

/// `SELECT v AS alias FROM ks.t WHERE k = key` (no alias when `None`).
pub fn select(key: i64, alias: Option<&str>) -> String {
    select_from(true, key, alias)
}

/// A read from `ks.t` (`qualified`) or `t`.
pub fn select_from(qualified: bool, key: i64, alias: Option<&str>) -> String {
    let mut s = String::from("SELECT v");
    if let Some(alias) = alias {
        let _ = write!(s, " AS {alias}");
    }
    let _ = write!(s, " FROM {} WHERE k = {key}", table(qualified));
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Int(i64),
    Text(String),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() || c == ';' {
            chars.next();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Word(word));
        } else if c.is_ascii_digit() || c == '-' {
            let mut number = String::new();
            number.push(c);
            chars.next();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_digit() {
                    number.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            let n = number
                .parse()
                .map_err(|_| format!("bad number '{number}' at {at}"))?;
            out.push(Token::Int(n));
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some((_, '\'')) => {
                        if chars.peek().map(|&(_, c)| c) == Some('\'') {
                            chars.next();
                            s.push('\'');
                        } else {
                            break;
                        }
                    }
                    Some((_, c)) => s.push(c),
                    None => return Err(format!("unterminated string at {at}")),
                }
            }
            out.push(Token::Text(s));
        } else if "(),=.?*".contains(c) {
            chars.next();
            out.push(Token::Punct(c));
        } else {
            return Err(format!("unexpected '{c}' at {at}"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn word(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w.to_ascii_lowercase()),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), String> {
        let w = self.word()?;
        if w == kw {
            Ok(())
        } else {
            Err(format!("expected {kw}, found {w}"))
        }
    }

    fn punct(&mut self, p: char) -> Result<(), String> {
        match self.next() {
            Some(Token::Punct(c)) if c == p => Ok(()),
            other => Err(format!("expected '{p}', found {other:?}")),
        }
    }

    /// `[ks.]t`: the keyspace, if given; the table must be `t`.
    fn table(&mut self) -> Result<Option<String>, String> {
        let first = self.word()?;
        let (keyspace, table) = if self.peek() == Some(&Token::Punct('.')) {
            self.next();
            (Some(first), self.word()?)
        } else {
            (None, first)
        };
        if table != TABLE {
            return Err(format!("unconfigured table {table}"));
        }
        Ok(keyspace)
    }

    fn term(&mut self) -> Result<Term, String> {
        match self.next() {
            Some(Token::Int(n)) => Ok(Term::Int(n)),
            Some(Token::Text(s)) => Ok(Term::Text(s)),
            Some(Token::Punct('?')) => Ok(Term::Marker),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?} at the end")),
        }
    }
}

/// Parses a statement, with the error text a cluster would answer with.
pub fn parse(text: &str) -> Result<Stmt, String> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let stmt = match p.word()?.as_str() {
        "insert" => {
            p.keyword("into")?;
            let keyspace = p.table()?;
            p.punct('(')?;
            p.keyword("k")?;
            p.punct(',')?;
            p.keyword("v")?;
            p.punct(')')?;
            p.keyword("values")?;
            p.punct('(')?;
            let key = p.term()?;
            p.punct(',')?;
            let value = p.term()?;
            p.punct(')')?;
            Stmt::Insert {
                keyspace,
                key,
                value,
            }
        }
        "select" => {
            p.keyword("v")?;
            let alias = if matches!(p.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("as"))
            {
                p.next();
                Some(p.word()?)
            } else {
                None
            };
            p.keyword("from")?;
            let keyspace = p.table()?;
            p.keyword("where")?;
            p.keyword("k")?;
            p.punct('=')?;
            let key = p.term()?;
            Stmt::Select {
                keyspace,
                alias,
                key,
            }
        }
        "use" => Stmt::Use {
            keyspace: p.word()?,
        },
        other => return Err(format!("unsupported statement {other}")),
    };
    p.end()?;
    Ok(stmt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            parse(&insert(-5, "it's")).unwrap(),
            Stmt::Insert {
                keyspace: Some("ks".into()),
                key: Term::Int(-5),
                value: Term::Text("it's".into())
            }
        );
        assert_eq!(
            parse(&select(3, Some("c0_1"))).unwrap(),
            Stmt::Select {
                keyspace: Some("ks".into()),
                alias: Some("c0_1".into()),
                key: Term::Int(3)
            }
        );
        assert_eq!(parse(INSERT_PREPARED).unwrap().markers(), 2);
        assert_eq!(parse(SELECT_PREPARED).unwrap().markers(), 1);
        assert_eq!(
            parse("use ks;").unwrap(),
            Stmt::Use {
                keyspace: "ks".into()
            }
        );
        assert!(parse("DROP TABLE ks.t").is_err());
        assert!(parse("SELECT v FROM ks.other WHERE k = 1").is_err());
        assert!(parse("INSERT INTO t (k, v) VALUES (1, 'x') extra").is_err());
    }
}
