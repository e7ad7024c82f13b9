//! The options of writes: when the secondary gets a write, and how far it may fall behind a
//! client connection.

use clap::{Args, ValueEnum};
use cqlmirror_core::config::{Config, WriteOrder};

use super::parse::parse_size;

/// A write order, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Both clusters get a write at once.
    Parallel,
    /// The secondary gets a write once the primary accepted it.
    PrimaryFirst,
}

impl From<Order> for WriteOrder {
    fn from(o: Order) -> Self {
        match o {
            Order::Parallel => WriteOrder::Parallel,
            Order::PrimaryFirst => WriteOrder::PrimaryFirst,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// When the secondary gets a write: `parallel` (both clusters at once) or `primary-first`
    /// (only once the primary accepted it with a RESULT, so that a statement the primary
    /// refuses, times out or fails never lands on the secondary alone; it is not counted as
    /// missed there). `primary-first` costs one more round trip per write: with --wait true
    /// the answer comes after both clusters in turn, with --wait false after the primary as
    /// before. Reads are not affected. Changeable at run time (SIGHUP with --config).
    #[arg(
        long,
        value_enum,
        value_name = "ORDER",
        default_value = "parallel",
        env = "CQLMIRROR_WRITE_ORDER"
    )]
    pub write_order: Order,

    /// Per client connection, the most requests the secondary may have unfinished (in flight,
    /// queued or held for it) before the proxy stops reading that client until the secondary
    /// has caught up by a quarter (backpressure): with --wait false a client then runs at the
    /// slower cluster's pace instead of the secondary's writes timing out or running out of
    /// stream ids. A secondary that finishes none of them within --wait-timeout is taken as
    /// stalled: clients are no longer held for it (its writes are counted as missed) until it
    /// answers again. 0: no bound; at most 32768.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        env = "CQLMIRROR_MAX_SECONDARY_LAG"
    )]
    pub max_secondary_lag: usize,

    /// The same bound on the bytes of those requests. Accepts K/M/G and KiB/MiB/GiB
    /// suffixes; 0: no bound.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_size,
          env = "CQLMIRROR_MAX_SECONDARY_LAG_BYTES")]
    pub max_secondary_lag_bytes: usize,
}

impl WriteArgs {
    /// Puts these settings into `config`.
    pub fn apply(&self, config: &mut Config) {
        config.write_order = self.write_order.into();
        config.max_secondary_lag = self.max_secondary_lag;
        config.max_secondary_lag_bytes = self.max_secondary_lag_bytes;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;
    use cqlmirror_core::config::WriteOrder;

    fn config(args: &[&str]) -> Result<cqlmirror_core::config::Config, String> {
        let cli = Cli::try_parse_from(["proxy", "a", "b"].into_iter().chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.settings(1).map(|s| s.config)
    }

    #[test]
    fn defaults_and_options() {
        let c = config(&[]).unwrap();
        assert_eq!(c.write_order, WriteOrder::Parallel);
        assert_eq!(
            (c.max_secondary_lag, c.max_secondary_lag_bytes),
            (1024, 4 << 20)
        );
        let c = config(&[
            "--write-order",
            "primary-first",
            "--max-secondary-lag",
            "0",
            "--max-secondary-lag-bytes",
            "512KiB",
        ])
        .unwrap();
        assert_eq!(c.write_order, WriteOrder::PrimaryFirst);
        assert_eq!(
            (c.max_secondary_lag, c.max_secondary_lag_bytes),
            (0, 512 << 10)
        );
        let e = config(&["--max-secondary-lag", "40000"]).unwrap_err();
        assert!(e.contains("--max-secondary-lag"), "{e}");
        assert!(config(&["--write-order", "backwards"]).is_err());
    }
}
