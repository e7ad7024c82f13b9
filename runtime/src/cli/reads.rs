//! The options of reads and comparison: which cluster serves clients, how reads are served,
//! what shadow reads may cost, which tables stay off the target, and the divergence report.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cqlmirror_core::config::{Config, Upstream};
use cqlmirror_core::filter::TableFilter;
use cqlmirror_core::routing::ReadMode;

/// A cluster, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cluster {
    Source,
    Target,
}

impl From<Cluster> for Upstream {
    fn from(c: Cluster) -> Self {
        match c {
            Cluster::Source => Upstream::Source,
            Cluster::Target => Upstream::Target,
        }
    }
}

/// A read mode, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The primary serves reads; the secondary never sees them.
    Primary,
    /// The primary serves reads; a sample also goes to the secondary, never waited for, and
    /// the answers are compared.
    Shadow,
    /// Reads go to both; the client waits for both; the answers are compared.
    Compare,
}

impl From<Mode> for ReadMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Primary => ReadMode::Primary,
            Mode::Shadow => ReadMode::Shadow,
            Mode::Compare => ReadMode::Compare,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// The cluster whose answers clients get; the other one mirrors writes. Switch it at run
    /// time with `admin set-primary` or SIGHUP with --config; requests in flight finish on
    /// the cluster they started with, and prepared statements keep working.
    #[arg(
        long,
        value_enum,
        value_name = "CLUSTER",
        default_value = "source",
        env = "CQLMIRROR_PRIMARY"
    )]
    pub primary: Cluster,

    /// How reads (SELECT) are served: `primary` (only the primary sees them), `shadow` (a
    /// sample also goes to the secondary in the background and is compared; clients never
    /// wait for it), `compare` (both, the client waits for both, compared). Reads of the
    /// system keyspaces always go to the primary alone. Changeable at run time (`admin
    /// set-read-mode`, SIGHUP).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "primary",
        env = "CQLMIRROR_READ_MODE"
    )]
    pub read_mode: Mode,

    /// In shadow mode, the fraction of reads also sent to the secondary (0 to 1; 0.1 is one
    /// read in ten). Changeable at run time (SIGHUP with --config).
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 1.0,
        env = "CQLMIRROR_SHADOW_SAMPLE"
    )]
    pub shadow_sample: f64,

    /// In shadow mode, the most shadow reads in flight at once across the proxy: beyond it,
    /// reads are not shadowed (counted), so a slow secondary costs bounded memory.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 256,
        env = "CQLMIRROR_SHADOW_MAX_IN_FLIGHT"
    )]
    pub shadow_max_in_flight: usize,

    /// A regular expression over `keyspace.table` (the whole name must match; unquoted names
    /// are lower case): statements on matching tables (simple, prepared, and inside BATCH
    /// messages, which the target gets without them) never reach the target.
    #[arg(long, value_name = "REGEX", env = "CQLMIRROR_FILTER_TABLES")]
    pub filter_tables: Option<String>,

    /// Comparisons with differences kept in memory for the divergence report (`report`
    /// command, GET /admin/report); counts are kept in full.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        env = "CQLMIRROR_DIVERGENCE_SAMPLES"
    )]
    pub divergence_samples: usize,

    /// Also append every divergence found to this file, one JSON object per line.
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_DIVERGENCE_LOG")]
    pub divergence_log: Option<PathBuf>,
}

impl ReadArgs {
    /// Puts these settings into `config`; the error names the option.
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        config.primary = self.primary.into();
        config.read_mode = self.read_mode.into();
        config.shadow_sample = self.shadow_sample;
        config.shadow_max_in_flight = self.shadow_max_in_flight;
        config.divergence_samples = self.divergence_samples;
        config.filter_tables = match &self.filter_tables {
            Some(pattern) => Some(TableFilter::new(pattern)?),
            None => None,
        };
        Ok(())
    }
}
