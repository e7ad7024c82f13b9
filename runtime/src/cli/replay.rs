//! The options of background replay (`--replay auto`): the proxy applies its journal of
//! missed writes to the cluster that missed them once that cluster answers again.

use clap::{Args, ValueEnum};
use cqlmirror_core::config::{Config, Upstream};

use crate::journal::JournalSettings;
use crate::replay::background::{AutoSettings, ClusterAccess, DEFAULT_RATE};
use crate::tls::TlsSettings;

/// Who replays the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayMode {
    /// An operator runs `replay` with the proxy stopped.
    Manual,
    /// The proxy replays in the background as soon as the cluster answers again.
    Auto,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Who applies the journal (--journal-dir) to the cluster that missed the writes: manual
    /// (`replay`, with the proxy stopped) or auto (the proxy, in the background, once that
    /// cluster answers again; throttled by --replay-rate; with the proxy's own
    /// --target-username/--source-username; plaintext clusters only). Takes effect at start.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "manual",
        env = "CQLMIRROR_REPLAY"
    )]
    pub replay: ReplayMode,

    /// With --replay auto: at most this many records replayed per second (e.g. 500 or
    /// 500/s; 0: as fast as the cluster answers).
    #[arg(long, value_name = "N/s", default_value_t = DEFAULT_RATE,
          value_parser = crate::replay::parse_rate, env = "CQLMIRROR_REPLAY_RATE")]
    pub replay_rate: f64,
}

impl ReplayArgs {
    /// The background replayer's settings with `--replay auto`; `config` holds the clusters
    /// and the proxy's credentials on them.
    pub fn settings(
        &self,
        journal: Option<&JournalSettings>,
        config: &Config,
        tls: &TlsSettings,
    ) -> Result<Option<AutoSettings>, String> {
        if self.replay == ReplayMode::Manual {
            return Ok(None);
        }
        let Some(journal) = journal else {
            return Err(
                "--replay auto replays the journal of missed writes: give --journal-dir too".into(),
            );
        };
        for upstream in Upstream::BOTH {
            if tls.backend(upstream).is_some() {
                return Err(format!(
                    "--replay auto: the {upstream} cluster is reached over TLS (--{upstream}-tls), which replay's client does not speak: use --replay manual (`replay` is plaintext too: run it from a host the cluster accepts plaintext from)"
                ));
            }
        }
        let access = |cluster: &cqlmirror_core::config::ClusterConfig| ClusterAccess {
            contact_points: cluster.contact_points.clone(),
            credentials: cluster.credentials.clone(),
        };
        Ok(Some(AutoSettings {
            dir: journal.dir.clone(),
            clusters: [access(&config.source), access(&config.target)],
            rate: self.replay_rate,
            timeout: config.request_timeout.max(config.connect_timeout),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use crate::cli::testing::{effective, from_config_file};
    use clap::Parser;

    #[test]
    fn manual_by_default_and_auto_needs_the_journal() {
        let settings = Cli::try_parse_from(["proxy", "a", "b"])
            .unwrap()
            .settings(1)
            .unwrap();
        assert!(settings.replay.is_none());
        let e = Cli::try_parse_from(["proxy", "--replay", "auto", "a", "b"])
            .unwrap()
            .settings(1)
            .unwrap_err();
        assert!(
            e.contains("--replay auto") && e.contains("--journal-dir"),
            "{e}"
        );
        let e = Cli::try_parse_from(["proxy", "--replay", "sometimes", "a", "b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--replay"), "{e}");
    }

    #[test]
    fn auto_takes_the_clusters_credentials_and_rate() {
        let settings = Cli::try_parse_from([
            "proxy",
            "--journal-dir",
            "/tmp/j",
            "--replay",
            "auto",
            "--replay-rate",
            "50/s",
            "--target-username",
            "app",
            "--target-password",
            "secret",
            "s1,s2:9043",
            "t1",
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        let auto = settings.replay.unwrap();
        assert_eq!(auto.dir, std::path::Path::new("/tmp/j"));
        assert_eq!(auto.rate, 50.0);
        assert_eq!(auto.clusters[0].contact_points.len(), 2);
        assert!(auto.clusters[0].credentials.is_none());
        assert_eq!(
            auto.clusters[1].credentials.as_ref().unwrap().username,
            "app"
        );
        let default = Cli::try_parse_from([
            "proxy",
            "--journal-dir",
            "/tmp/j",
            "--replay",
            "auto",
            "a",
            "b",
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        assert_eq!(
            default.replay.unwrap().rate,
            crate::replay::background::DEFAULT_RATE
        );
        let e = Cli::try_parse_from(["proxy", "--replay-rate", "fast", "a", "b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--replay-rate"), "{e}");
    }

    #[test]
    fn auto_refuses_clusters_over_tls() {
        let e = Cli::try_parse_from([
            "proxy",
            "--journal-dir",
            "/tmp/j",
            "--replay",
            "auto",
            "--target-tls",
            "true",
            "a",
            "b",
        ])
        .unwrap()
        .settings(1)
        .unwrap_err();
        assert!(
            e.contains("target cluster is reached over TLS") && e.contains("--replay manual"),
            "{e}"
        );
    }

    #[test]
    fn from_the_config_file_and_in_the_effective_options() {
        let cli = from_config_file(
            "replay",
            "journal-dir = \"/var/lib/j\"\nreplay = \"auto\"\nreplay-rate = \"100\"\n",
        );
        let effective = |name: &str| effective(&cli, name);
        assert_eq!(
            effective("replay"),
            Some(("auto".to_owned(), "config file"))
        );
        assert_eq!(
            effective("replay-rate"),
            Some(("100".to_owned(), "config file"))
        );
        assert_eq!(cli.settings(1).unwrap().replay.unwrap().rate, 100.0);
    }
}
