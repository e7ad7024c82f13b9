//! Helpers of the option tests: a configuration file parsed as the proxy would, and what the
//! effective options then say.

use std::ffi::OsString;

use crate::cli::Cli;

/// The options from a configuration file holding `text` (written under the temporary
/// directory as `name`, removed after), with both clusters on the command line.
pub fn from_config_file(name: &str, text: &str) -> Cli {
    let path = std::env::temp_dir().join(format!("cqlmirror-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let args: Vec<OsString> = ["proxy", "--config", path.to_str().unwrap(), "a", "b"]
        .into_iter()
        .map(Into::into)
        .collect();
    let cli = Cli::parse_with_file("proxy", &args).unwrap();
    std::fs::remove_file(&path).unwrap();
    cli
}

/// Option `name`'s values (comma-joined) and where they came from, as the effective options
/// list them.
pub fn effective(cli: &Cli, name: &str) -> Option<(String, &'static str)> {
    cli.effective
        .0
        .iter()
        .find(|o| o.name == name)
        .map(|o| (o.values.join(","), o.source))
}
