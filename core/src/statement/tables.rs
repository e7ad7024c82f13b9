//! The tables a write changes, read off its text: for counting the writes a cluster missed
//! per table (and, with the journal, for saying which rows need attention).
//!
//! `INSERT INTO name`, `UPDATE name` and `DELETE ... FROM name`, in a statement or in each
//! statement of a text batch; `name` is `table` or `keyspace.table`, quoted or not.

use super::lexer::{Lexer, Token};

/// A table: its keyspace when the statement names one, and its name, as CQL resolves them
/// (unquoted names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    pub keyspace: Option<String>,
    pub table: String,
}

impl TableRef {
    /// With `keyspace` (the connection's, or the prepared statement's) where the statement
    /// names none.
    pub fn in_keyspace(mut self, keyspace: Option<&str>) -> Self {
        if self.keyspace.is_none() {
            self.keyspace = keyspace.map(str::to_owned);
        }
        self
    }
}

/// Every table `text` writes to, in order of appearance, without repeats.
pub fn written_tables(text: &str) -> Vec<TableRef> {
    let tokens: Vec<Token<'_>> = Lexer::new(text).collect();
    let mut tables: Vec<TableRef> = Vec::new();
    let mut deleting = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let name_at =
            if token.is_word("insert") && tokens.get(i + 1).is_some_and(|t| t.is_word("into")) {
                deleting = false;
                Some(i + 2)
            } else if token.is_word("update") {
                deleting = false;
                Some(i + 1)
            } else if token.is_word("truncate") {
                deleting = false;
                Some(if tokens.get(i + 1).is_some_and(|t| t.is_word("table")) {
                    i + 2
                } else {
                    i + 1
                })
            } else if token.is_word("delete") {
                deleting = true;
                None
            } else if deleting && token.is_word("from") {
                deleting = false;
                Some(i + 1)
            } else {
                None
            };
        if let Some(at) = name_at {
            if let Some((table, next)) = qualified_name(&tokens, at) {
                if !tables.contains(&table) {
                    tables.push(table);
                }
                i = next;
                continue;
            }
        }
        i += 1;
    }
    tables
}

/// The table a SELECT reads: the name after its first `FROM` outside parentheses. Reads the
/// statement once, keeping only the few tokens of the name.
pub fn read_table(text: &str) -> Option<TableRef> {
    let mut tokens = Lexer::new(text);
    let mut depth = 0usize;
    for token in tokens.by_ref() {
        if token.is_symbol('(') {
            depth += 1;
        } else if token.is_symbol(')') {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && token.is_word("from") {
            let name: Vec<Token<'_>> = tokens.take(3).collect();
            return qualified_name(&name, 0).map(|(table, _)| table);
        }
    }
    None
}

/// `text` with every table it names without a keyspace (`INSERT INTO t`, `UPDATE t`,
/// `DELETE ... FROM t`, `SELECT ... FROM t`, `TRUNCATE t`, in a statement or a text batch)
/// qualified with `keyspace`, quoted; `None` when every table already names its keyspace.
///
/// For preparing a statement again on a cluster connection whose keyspace (`USE`) is not the
/// one the statement was prepared in: protocol v3 and v4 PREPARE carries no keyspace.
pub fn qualified(text: &str, keyspace: &str) -> Option<String> {
    let tokens: Vec<Token<'_>> = Lexer::new(text).collect();
    let mut at_offsets = Vec::new();
    let (mut deleting, mut selecting, mut depth) = (false, false, 0usize);
    for (i, token) in tokens.iter().enumerate() {
        if token.is_symbol('(') {
            depth += 1;
        } else if token.is_symbol(')') {
            depth = depth.saturating_sub(1);
        }
        let name_at =
            if token.is_word("insert") && tokens.get(i + 1).is_some_and(|t| t.is_word("into")) {
                Some(i + 2)
            } else if token.is_word("update") {
                Some(i + 1)
            } else if token.is_word("truncate") {
                Some(if tokens.get(i + 1).is_some_and(|t| t.is_word("table")) {
                    i + 2
                } else {
                    i + 1
                })
            } else if token.is_word("delete") {
                deleting = true;
                None
            } else if token.is_word("select") {
                selecting = true;
                None
            } else if (deleting || selecting) && depth == 0 && token.is_word("from") {
                (deleting, selecting) = (false, false);
                Some(i + 1)
            } else {
                None
            };
        let Some(at) = name_at else { continue };
        let Some(name) = tokens.get(at).filter(|t| t.is_identifier()) else {
            continue;
        };
        if !tokens.get(at + 1).is_some_and(|t| t.is_symbol('.')) {
            at_offsets.push(name.span.start);
        }
    }
    if at_offsets.is_empty() {
        return None;
    }
    let prefix = format!("{}.", super::identifier::quoted(keyspace));
    let mut out = String::with_capacity(text.len() + at_offsets.len() * prefix.len());
    let mut copied = 0;
    for at in at_offsets {
        out.push_str(text.get(copied..at)?);
        out.push_str(&prefix);
        copied = at;
    }
    out.push_str(text.get(copied..)?);
    Some(out)
}

/// `name` or `keyspace.name` starting at `at`, and the index after it.
fn qualified_name(tokens: &[Token<'_>], at: usize) -> Option<(TableRef, usize)> {
    let first = tokens.get(at).filter(|t| t.is_identifier())?;
    let dotted = tokens.get(at + 1).is_some_and(|t| t.is_symbol('.'));
    match tokens.get(at + 2).filter(|t| dotted && t.is_identifier()) {
        Some(second) => Some((
            TableRef {
                keyspace: Some(first.value().into_owned()),
                table: second.value().into_owned(),
            },
            at + 3,
        )),
        None => Some((
            TableRef {
                keyspace: None,
                table: first.value().into_owned(),
            },
            at + 1,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(keyspace: Option<&str>, table: &str) -> TableRef {
        TableRef {
            keyspace: keyspace.map(str::to_owned),
            table: table.to_owned(),
        }
    }

    #[test]
    fn the_table_of_each_kind_of_write() {
        let tables = written_tables;
        assert_eq!(
            tables("INSERT INTO ks.t (k) VALUES (1)"),
            [t(Some("ks"), "t")]
        );
        assert_eq!(tables("insert into T (k) values (1)"), [t(None, "t")]);
        assert_eq!(
            tables("UPDATE \"Ks\".\"Tab\" USING TTL 5 SET v = 1 WHERE k = 1"),
            [t(Some("Ks"), "Tab")]
        );
        assert_eq!(
            tables("DELETE v, w FROM ks.t WHERE k = 1"),
            [t(Some("ks"), "t")]
        );
        assert_eq!(
            tables("DELETE FROM t WHERE k = 1 IF EXISTS"),
            [t(None, "t")]
        );
        assert_eq!(
            tables(
                "/* INSERT INTO x */ -- update y\nUPDATE ks.t SET s = 'insert into z' WHERE k = 1"
            ),
            [t(Some("ks"), "t")]
        );
        assert!(tables("SELECT * FROM ks.t").is_empty());
    }

    #[test]
    fn the_table_a_select_reads() {
        assert_eq!(
            read_table("SELECT * FROM ks.t WHERE k = 1"),
            Some(t(Some("ks"), "t"))
        );
        assert_eq!(
            read_table("select json k, cast(v as text) from \"Ks\".\"T\""),
            Some(t(Some("Ks"), "T"))
        );
        assert_eq!(
            read_table("/* FROM x */ SELECT count(*) -- from y\n FROM t"),
            Some(t(None, "t"))
        );
        assert_eq!(
            read_table("SELECT 'from z' AS f FROM a.b"),
            Some(t(Some("a"), "b"))
        );
        assert_eq!(read_table("SELECT now()"), None);
        assert_eq!(written_tables("TRUNCATE TABLE ks.t"), [t(Some("ks"), "t")]);
        assert_eq!(written_tables("truncate t"), [t(None, "t")]);
    }

    #[test]
    fn unqualified_tables_are_qualified_with_the_keyspace() {
        let q = |text| qualified(text, "ks");
        assert_eq!(
            q("INSERT INTO t (k) VALUES (?)").as_deref(),
            Some("INSERT INTO \"ks\".t (k) VALUES (?)")
        );
        assert_eq!(
            q("update T set v = 'from x' where k = ?").as_deref(),
            Some("update \"ks\".T set v = 'from x' where k = ?")
        );
        assert_eq!(
            q("DELETE v FROM \"Tab\" WHERE k = 1").as_deref(),
            Some("DELETE v FROM \"ks\".\"Tab\" WHERE k = 1")
        );
        assert_eq!(
            q("SELECT cast(v AS text), count(*) /* FROM c */ FROM t WHERE k = ?").as_deref(),
            Some("SELECT cast(v AS text), count(*) /* FROM c */ FROM \"ks\".t WHERE k = ?")
        );
        assert_eq!(
            q("TRUNCATE TABLE t").as_deref(),
            Some("TRUNCATE TABLE \"ks\".t")
        );
        assert_eq!(
            q("BEGIN BATCH INSERT INTO a (k) VALUES (1); UPDATE other.b SET v = 1 WHERE k = 1; APPLY BATCH")
                .as_deref(),
            Some("BEGIN BATCH INSERT INTO \"ks\".a (k) VALUES (1); UPDATE other.b SET v = 1 WHERE k = 1; APPLY BATCH")
        );
        assert_eq!(q("SELECT * FROM other.t WHERE k = ?"), None);
        assert_eq!(q("INSERT INTO x.y (k) VALUES (1)"), None);
        assert_eq!(
            qualified("SELECT * FROM t", "Mixed\"Case").as_deref(),
            Some("SELECT * FROM \"Mixed\"\"Case\".t")
        );
    }

    #[test]
    fn a_text_batch_names_every_table_once() {
        assert_eq!(
            written_tables(
                "BEGIN BATCH INSERT INTO a.x (k) VALUES (1); UPDATE a.y SET v = 2 WHERE k = 1; \
                 DELETE FROM a.x WHERE k = 3; APPLY BATCH"
            ),
            [t(Some("a"), "x"), t(Some("a"), "y")]
        );
    }

    #[test]
    fn the_connection_keyspace_fills_in() {
        let table = written_tables("INSERT INTO t (k) VALUES (1)").remove(0);
        assert_eq!(table.in_keyspace(Some("ks")), t(Some("ks"), "t"));
        let table = written_tables("INSERT INTO other.t (k) VALUES (1)").remove(0);
        assert_eq!(table.in_keyspace(Some("ks")), t(Some("other"), "t"));
    }
}
