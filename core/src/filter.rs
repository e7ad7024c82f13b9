//! `--filter-tables`: tables whose statements never reach the target.
//!
//! The pattern is matched against `keyspace.table` as CQL resolves the names (unquoted names
//! lower-cased), not against the statement text, so that a table named in a comment or a
//! string literal, or a statement that merely mentions the name, is not caught by accident.
//! The pattern must match the whole name: `shop\.audit_.*` keeps every `audit_` table of
//! `shop` off the target, and nothing of a keyspace `shop_archive`.

use std::fmt;

use crate::statement::tables::TableRef;

/// A compiled `--filter-tables` pattern.
#[derive(Clone)]
pub struct TableFilter {
    pattern: String,
    anchored: regex_lite::Regex,
}

impl TableFilter {
    /// Compiles `pattern`; the error names the option and says what is wrong.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let anchored = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            format!("--filter-tables '{pattern}' is not a valid regular expression: {e}")
        })?;
        Ok(Self {
            pattern: pattern.to_owned(),
            anchored,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether `table` (its keyspace resolved, when known) is kept off the target. A table
    /// whose keyspace is unknown is matched by its name alone.
    pub fn matches(&self, table: &TableRef) -> bool {
        match &table.keyspace {
            Some(keyspace) => self
                .anchored
                .is_match(&format!("{keyspace}.{}", table.table)),
            None => self.anchored.is_match(&table.table),
        }
    }
}

impl PartialEq for TableFilter {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl fmt::Debug for TableFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableFilter({:?})", self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keyspace: Option<&str>, name: &str) -> TableRef {
        TableRef {
            keyspace: keyspace.map(str::to_owned),
            table: name.to_owned(),
        }
    }

    #[test]
    fn the_whole_qualified_name_must_match() {
        let f = TableFilter::new(r"shop\.audit_.*").unwrap();
        assert!(f.matches(&table(Some("shop"), "audit_log")));
        assert!(!f.matches(&table(Some("shop_archive"), "audit_log")));
        assert!(!f.matches(&table(Some("shop"), "orders")));
        assert!(!f.matches(&table(Some("xshop"), "audit_log")));
        let alternatives = TableFilter::new(r"a\.x|b\.y").unwrap();
        assert!(alternatives.matches(&table(Some("b"), "y")));
        assert!(!alternatives.matches(&table(Some("a"), "xx")));
    }

    #[test]
    fn an_unknown_keyspace_matches_by_name() {
        let f = TableFilter::new("audit").unwrap();
        assert!(f.matches(&table(None, "audit")));
        assert!(!f.matches(&table(Some("ks"), "audit")));
    }

    #[test]
    fn a_bad_pattern_names_the_option() {
        let e = TableFilter::new("shop.(").unwrap_err();
        assert!(
            e.starts_with("--filter-tables 'shop.(' is not a valid regular expression"),
            "{e}"
        );
    }
}
