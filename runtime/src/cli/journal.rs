//! The options of the journal of missed writes (`--journal-dir` and its settings).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cqlmirror_core::config::Config;

use super::parse::parse_size;
use crate::journal::{FsyncPolicy, JournalSettings};

/// When journaled records are synced to disk, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// After every group of records written together: a machine crash loses nothing the
    /// journal wrote.
    Always,
    /// At most 100 ms after a record is written: a power loss takes at most that much.
    Interval,
    /// Left to the operating system: a proxy crash loses nothing, a power loss may.
    Never,
}

impl From<Fsync> for FsyncPolicy {
    fn from(f: Fsync) -> Self {
        match f {
            Fsync::Always => Self::Always,
            Fsync::Interval => Self::default(),
            Fsync::Never => Self::Never,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// Keep every write the secondary missed (error, timeout, connection lost or down) in an
    /// append-only journal in this directory (created if missing; one proxy per directory),
    /// so that `replay` can apply them to it later. Without it, missed writes are only
    /// counted and logged.
    #[arg(long, value_name = "DIR", env = "CQLMIRROR_JOURNAL_DIR")]
    pub journal_dir: Option<PathBuf>,

    /// When the journal syncs what it wrote: always (after each group commit), interval
    /// (every 100 ms), never (left to the operating system).
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "interval",
        env = "CQLMIRROR_JOURNAL_FSYNC"
    )]
    pub journal_fsync: Fsync,

    /// The most the journal may take on disk (e.g. 10GiB). Once reached, missed writes are
    /// counted as refused (cqlmirror_journal_refused_total{reason="full"}), logged, and the
    /// proxy reports not ready, until replay releases what it applied.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size,
          env = "CQLMIRROR_JOURNAL_MAX_SIZE")]
    pub journal_max_size: usize,
}

impl JournalArgs {
    /// Puts these settings into `config`, and the journal's own settings if it is on.
    pub fn apply(&self, config: &mut Config) -> Result<Option<JournalSettings>, String> {
        let Some(dir) = &self.journal_dir else {
            config.journal = false;
            return Ok(None);
        };
        if dir.as_os_str().is_empty() {
            return Err("--journal-dir is empty: give a directory (or leave the option out to journal nothing)".into());
        }
        let mut settings = JournalSettings::new(dir.clone());
        settings.fsync = self.journal_fsync.into();
        settings.max_size = self.journal_max_size as u64;
        if settings.max_size < settings.segment_size {
            // Smaller caps are fine for tests and small disks: segments roll sooner.
            settings.segment_size = (settings.max_size / 4).max(4096);
        }
        config.journal = true;
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use crate::cli::testing::{effective, from_config_file};
    use clap::Parser;

    #[test]
    fn off_by_default_and_settings_when_given() {
        let settings = Cli::try_parse_from(["proxy", "a", "b"])
            .unwrap()
            .settings(1)
            .unwrap();
        assert!(!settings.config.journal);
        assert!(settings.journal.is_none());
        let settings = Cli::try_parse_from([
            "proxy",
            "--journal-dir",
            "/tmp/j",
            "--journal-fsync",
            "always",
            "--journal-max-size",
            "1MiB",
            "a",
            "b",
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        assert!(settings.config.journal);
        let journal = settings.journal.unwrap();
        assert_eq!(journal.dir, std::path::Path::new("/tmp/j"));
        assert_eq!(journal.fsync, crate::journal::FsyncPolicy::Always);
        assert_eq!(journal.max_size, 1 << 20);
        assert!(journal.segment_size <= journal.max_size);
    }

    #[test]
    fn from_the_config_file_and_in_the_effective_options() {
        let cli = from_config_file(
            "journal",
            "journal-dir = \"/var/lib/j\"\njournal-fsync = \"never\"\njournal-max-size = \"2GiB\"\n",
        );
        let effective = |name: &str| effective(&cli, name);
        assert_eq!(
            effective("journal-dir"),
            Some(("/var/lib/j".to_owned(), "config file"))
        );
        assert_eq!(
            effective("journal-fsync"),
            Some(("never".to_owned(), "config file"))
        );
        let journal = cli.settings(1).unwrap().journal.unwrap();
        assert_eq!(journal.fsync, crate::journal::FsyncPolicy::Never);
        assert_eq!(journal.max_size, 2 << 30);
    }

    #[test]
    fn errors_name_the_option() {
        let e = Cli::try_parse_from(["proxy", "--journal-fsync", "sometimes", "a", "b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--journal-fsync"), "{e}");
        let e = Cli::try_parse_from(["proxy", "--journal-max-size", "lots", "a", "b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--journal-max-size"), "{e}");
    }
}
