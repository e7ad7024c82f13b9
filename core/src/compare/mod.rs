//! Placeholder API of the comparator (replaced by the real one).
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::metadata::ColumnSpec;
use crate::schema::TableKey;

pub struct Side<'a> {
    pub opcode: Opcode,
    pub message: &'a [u8],
}
pub struct Context<'a> {
    pub version: ProtocolVersion,
    pub columns: Option<&'a [ColumnSpec<'a>]>,
    pub key: Option<&'a TableKey>,
    pub ordered: bool,
    pub max_samples: usize,
    pub max_value_len: usize,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DivergenceKind {
    MissingRows,
    ExtraRows,
    DifferentValues,
    Error,
    Order,
    Columns,
}
impl DivergenceKind {
    pub const ALL: [Self; 6] = [
        Self::MissingRows,
        Self::ExtraRows,
        Self::DifferentValues,
        Self::Error,
        Self::Order,
        Self::Columns,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingRows => "missing_rows",
            Self::ExtraRows => "extra_rows",
            Self::DifferentValues => "different_values",
            Self::Error => "error",
            Self::Order => "order",
            Self::Columns => "columns",
        }
    }
}
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub missing_rows: u64,
    pub extra_rows: u64,
    pub different_rows: u64,
    pub error: u64,
    pub order: u64,
    pub columns: u64,
}
impl Counts {
    pub fn get(&self, kind: DivergenceKind) -> u64 {
        match kind {
            DivergenceKind::MissingRows => self.missing_rows,
            DivergenceKind::ExtraRows => self.extra_rows,
            DivergenceKind::DifferentValues => self.different_rows,
            DivergenceKind::Error => self.error,
            DivergenceKind::Order => self.order,
            DivergenceKind::Columns => self.columns,
        }
    }
    pub fn is_empty(&self) -> bool {
        DivergenceKind::ALL.iter().all(|k| self.get(*k) == 0)
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDifference {
    pub name: String,
    pub primary: Option<String>,
    pub secondary: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDifference {
    pub kind: DivergenceKind,
    pub key: Vec<(String, String)>,
    pub columns: Vec<ColumnDifference>,
}
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub table: Option<(String, String)>,
    pub counts: Counts,
    pub notes: Vec<String>,
    pub samples: Vec<RowDifference>,
}
pub fn compare(_p: Side<'_>, _s: Side<'_>, _c: &Context<'_>) -> Comparison {
    Comparison::default()
}
