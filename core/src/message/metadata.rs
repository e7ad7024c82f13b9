//! Column metadata of Rows results and of PREPARED results.
//!
//! The proxy reads it to find columns by name when it rewrites `system.local` and
//! `system.peers` rows, and to compare results of the two clusters column by column.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::ProtocolVersion;
use crate::message::types::ColumnType;
use crate::wire::{self, Reader};

/// The keyspace and table a column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableSpec<'a> {
    pub keyspace: &'a str,
    pub table: &'a str,
}

impl<'a> TableSpec<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            keyspace: r.string()?,
            table: r.string()?,
        })
    }

    fn write(&self, out: &mut BytesMut) {
        wire::put_string(out, self.keyspace);
        wire::put_string(out, self.table);
    }
}

/// One column (or bind marker) description.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnSpec<'a> {
    /// The column's own table; `None` when the metadata has a global table spec.
    pub table: Option<TableSpec<'a>>,
    /// The column name, alias or bind marker name.
    pub name: &'a str,
    pub column_type: ColumnType<'a>,
}

impl<'a> ColumnSpec<'a> {
    /// Reads `count` specs. Each takes at least a name and a type id (4 bytes), so the vector
    /// is never sized beyond what the body could hold.
    fn read_all(r: &mut Reader<'a>, count: usize, global: bool) -> Result<Vec<Self>, DecodeError> {
        let mut out = Vec::with_capacity(count.min(r.remaining() / 4));
        for _ in 0..count {
            let table = if global {
                None
            } else {
                Some(TableSpec::read(r)?)
            };
            out.push(Self {
                table,
                name: r.string()?,
                column_type: ColumnType::decode(r)?,
            });
        }
        Ok(out)
    }

    /// Writes specs; per-column table specs only when there is no global one (a missing one
    /// is written as empty names).
    fn write_all(specs: &[Self], global: bool, out: &mut BytesMut) {
        for spec in specs {
            if !global {
                spec.table
                    .unwrap_or(TableSpec {
                        keyspace: "",
                        table: "",
                    })
                    .write(out);
            }
            wire::put_string(out, spec.name);
            spec.column_type.encode(out);
        }
    }
}

bitflags::bitflags! {
    /// The `<flags>` of Rows metadata.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RowsFlags: i32 {
        const GLOBAL_TABLES_SPEC = 0x0001;
        const HAS_MORE_PAGES = 0x0002;
        const NO_METADATA = 0x0004;
        /// v5: the result metadata changed; the new metadata id follows.
        const METADATA_CHANGED = 0x0008;
    }
}

impl RowsFlags {
    const KNOWN: i32 = Self::all().bits();
}

/// The column descriptions of a result, or only their number when the client asked to skip
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns<'a> {
    /// No_metadata (flag 0x0004): the client already knows the columns.
    Skipped { count: usize },
    Described {
        /// Flag 0x0001: every column is in this table.
        global_table_spec: Option<TableSpec<'a>>,
        specs: Vec<ColumnSpec<'a>>,
    },
}

impl<'a> Columns<'a> {
    /// Columns described with one table spec for all.
    pub fn in_table(table: TableSpec<'a>, columns: &[(&'a str, ColumnType<'a>)]) -> Self {
        Self::Described {
            global_table_spec: Some(table),
            specs: columns
                .iter()
                .map(|(name, column_type)| ColumnSpec {
                    table: None,
                    name,
                    column_type: column_type.clone(),
                })
                .collect(),
        }
    }

    pub fn count(&self) -> usize {
        match self {
            Self::Skipped { count } => *count,
            Self::Described { specs, .. } => specs.len(),
        }
    }

    /// The column specs, if described.
    pub fn specs(&self) -> Option<&[ColumnSpec<'a>]> {
        match self {
            Self::Skipped { .. } => None,
            Self::Described { specs, .. } => Some(specs),
        }
    }

    /// Index of the first column named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.specs()?.iter().position(|c| c.name == name)
    }

    /// The table of column `index`: its own, or the global one.
    pub fn table_of(&self, index: usize) -> Option<TableSpec<'a>> {
        match self {
            Self::Skipped { .. } => None,
            Self::Described {
                global_table_spec,
                specs,
            } => specs.get(index)?.table.or(*global_table_spec),
        }
    }
}

/// The `<metadata>` of a Rows result (and the result metadata of a PREPARED result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsMetadata<'a> {
    /// Flag 0x0002: there are more pages; pass this back to get the next one.
    pub paging_state: Option<&'a [u8]>,
    /// Flag 0x0008 (v5): the id of the changed result metadata.
    pub new_metadata_id: Option<&'a [u8]>,
    pub columns: Columns<'a>,
}

impl<'a> RowsMetadata<'a> {
    /// Metadata describing `columns` of one table, with no paging state.
    pub fn new(columns: Columns<'a>) -> Self {
        Self {
            paging_state: None,
            new_metadata_id: None,
            columns,
        }
    }

    /// The flags this metadata is encoded with.
    pub fn flags(&self) -> RowsFlags {
        let mut f = RowsFlags::default();
        if self.paging_state.is_some() {
            f = f.union(RowsFlags::HAS_MORE_PAGES);
        }
        if self.new_metadata_id.is_some() {
            f = f.union(RowsFlags::METADATA_CHANGED);
        }
        match &self.columns {
            Columns::Skipped { .. } => f = f.union(RowsFlags::NO_METADATA),
            Columns::Described {
                global_table_spec: Some(_),
                ..
            } => f = f.union(RowsFlags::GLOBAL_TABLES_SPEC),
            Columns::Described { .. } => {}
        }
        f
    }

    pub fn column_count(&self) -> usize {
        self.columns.count()
    }

    /// Reads `<flags><columns_count>[<paging_state>][<new_metadata_id>]`
    /// `[<global_table_spec>?<col_spec_1>...<col_spec_n>]`.
    pub(crate) fn read(r: &mut Reader<'a>, _version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags_at = r.position();
        let flags = RowsFlags::from_bits_retain(r.i32()?);
        // Metadata_changed requires No_metadata unset: with both, where the id sits is
        // ambiguous, so such a body is refused rather than guessed at.
        let both = RowsFlags::NO_METADATA.union(RowsFlags::METADATA_CHANGED);
        if flags.bits() & !RowsFlags::KNOWN != 0 || flags.contains(both) {
            return Err(Reader::error_at(
                flags_at,
                DecodeErrorKind::InvalidValue {
                    field: "rows metadata flags",
                    value: i64::from(flags.bits()),
                },
            ));
        }
        let count = r.count()?;
        let paging_state = if flags.contains(RowsFlags::HAS_MORE_PAGES) {
            r.bytes()?
        } else {
            None
        };
        let new_metadata_id = if flags.contains(RowsFlags::METADATA_CHANGED) {
            Some(r.short_bytes()?)
        } else {
            None
        };
        let columns = if flags.contains(RowsFlags::NO_METADATA) {
            Columns::Skipped { count }
        } else {
            let global = flags.contains(RowsFlags::GLOBAL_TABLES_SPEC);
            let global_table_spec = if global {
                Some(TableSpec::read(r)?)
            } else {
                None
            };
            Columns::Described {
                global_table_spec,
                specs: ColumnSpec::read_all(r, count, global)?,
            }
        };
        Ok(Self {
            paging_state,
            new_metadata_id,
            columns,
        })
    }

    pub(crate) fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.flags().bits());
        wire::put_count(out, self.column_count());
        if let Some(state) = self.paging_state {
            wire::put_bytes(out, Some(state));
        }
        if let Some(id) = self.new_metadata_id {
            wire::put_short_bytes(out, id);
        }
        if let Columns::Described {
            global_table_spec,
            specs,
        } = &self.columns
        {
            if let Some(global) = global_table_spec {
                global.write(out);
            }
            ColumnSpec::write_all(specs, global_table_spec.is_some(), out);
        }
    }
}

/// The bind-marker `<metadata>` of a PREPARED result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreparedMetadata<'a> {
    /// v4+: for each partition key column, the index of its bind marker (empty if some
    /// partition key column is not bound). Not encoded in v3.
    pub pk_indexes: Vec<u16>,
    /// Flag 0x0001: every bind marker is in this table.
    pub global_table_spec: Option<TableSpec<'a>>,
    pub columns: Vec<ColumnSpec<'a>>,
}

impl<'a> PreparedMetadata<'a> {
    const GLOBAL_TABLES_SPEC: i32 = 0x0001;

    /// Reads `<flags><columns_count>[<pk_count><pk_index_1>...]`
    /// `[<global_table_spec>?<col_spec_1>...<col_spec_n>]`.
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags_at = r.position();
        let flags = r.i32()?;
        if flags & !Self::GLOBAL_TABLES_SPEC != 0 {
            return Err(Reader::error_at(
                flags_at,
                DecodeErrorKind::InvalidValue {
                    field: "prepared metadata flags",
                    value: i64::from(flags),
                },
            ));
        }
        let count = r.count()?;
        let mut pk_indexes = Vec::new();
        if version >= ProtocolVersion::V4 {
            let pk_count = r.count()?;
            if pk_count.saturating_mul(2) > r.remaining() {
                return Err(r.error(DecodeErrorKind::Truncated {
                    needed: pk_count.saturating_mul(2),
                    available: r.remaining(),
                }));
            }
            pk_indexes.reserve_exact(pk_count);
            for _ in 0..pk_count {
                pk_indexes.push(r.u16()?);
            }
        }
        let global = flags & Self::GLOBAL_TABLES_SPEC != 0;
        let global_table_spec = if global {
            Some(TableSpec::read(r)?)
        } else {
            None
        };
        Ok(Self {
            pk_indexes,
            global_table_spec,
            columns: ColumnSpec::read_all(r, count, global)?,
        })
    }

    pub(crate) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) {
        let global = self.global_table_spec.is_some();
        out.put_i32(if global { Self::GLOBAL_TABLES_SPEC } else { 0 });
        wire::put_count(out, self.columns.len());
        if version >= ProtocolVersion::V4 {
            wire::put_count(out, self.pk_indexes.len());
            for i in &self.pk_indexes {
                out.put_u16(*i);
            }
        }
        if let Some(spec) = &self.global_table_spec {
            spec.write(out);
        }
        ColumnSpec::write_all(&self.columns, global, out);
    }
}
