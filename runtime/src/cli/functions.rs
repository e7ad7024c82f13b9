//! The option of function calls the proxy evaluates itself (`--uuid`).

use clap::Args;
use clap::builder::BoolishValueParser;
use cqlmirror_core::config::Config;

#[derive(Debug, Clone, Args)]
pub struct FunctionArgs {
    /// Evaluate now(), uuid(), currentTimeUUID(), currentTimestamp(), currentDate(),
    /// currentTime() (and their snake_case names, e.g. current_timestamp()) in writes once,
    /// in the proxy, so that both clusters store the same values: statement text gets
    /// literals, prepared statements get bind markers the proxy fills at each execution.
    /// false: each cluster evaluates them on its own, and the clusters' values differ.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_UUID")]
    pub uuid: bool,
}

impl FunctionArgs {
    /// Puts these settings into `config`.
    pub fn apply(&self, config: &mut Config) {
        config.replace_functions = self.uuid;
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::Parser;

    fn uuid(args: &[&str]) -> bool {
        let cli =
            Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied())).unwrap();
        cli.functions.uuid
    }

    #[test]
    fn on_by_default_and_the_older_proxys_syntax() {
        assert!(uuid(&["a", "b"]));
        assert!(uuid(&["a", "b", "--uuid"]));
        assert!(uuid(&["--uuid", "true", "a", "b"]));
        assert!(!uuid(&["--uuid", "false", "a", "b"]));
        assert!(!uuid(&["--uuid=false", "a", "b"]));
        let settings = Cli::try_parse_from(["proxy", "--uuid", "false", "a", "b"])
            .unwrap()
            .settings(1)
            .unwrap();
        assert!(!settings.config.replace_functions);
    }
}
