//! The config file (`--config cqlmirror.toml`): every option, named as on the command line
//! without its dashes, e.g.
//!
//! ```toml
//! source = "10.0.0.1,10.0.0.2"
//! target = "cassandra.example.com"
//! wait = true
//! wait-timeout = "1s"
//! protocol-version = [4, 5]
//! ```
//!
//! Precedence: command line, then environment (`CQLMIRROR_*`), then the file, then the
//! defaults. The file is read with the `toml` crate into a table; each key must name an option
//! (an unknown key is an error that names it and the closest option), and its value is handed
//! to the same parser as on the command line, so the file accepts exactly what the command
//! line does.

use std::ffi::OsString;
use std::path::Path;

use clap::Command;

/// One option set by the file: its id and its values as command-line text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOption {
    pub id: String,
    /// The option's name in the file (its long name, or the positional's name).
    pub key: String,
    pub values: Vec<String>,
    pub positional: bool,
}

/// Reads `path` and maps each key to an option of `command`.
pub fn read(path: &Path, command: &Command) -> Result<Vec<FileOption>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config {}: cannot read the file: {e}", path.display()))?;
    parse(&text, command).map_err(|e| format!("--config {}: {e}", path.display()))
}

/// Maps the keys of a TOML document to the options of `command`.
pub fn parse(text: &str, command: &Command) -> Result<Vec<FileOption>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.to_string().trim_end()))?;
    let mut options = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    || (a.is_positional() && a.get_id().as_str() == key)
            })
            .filter(|a| a.get_id() != "config");
        let Some(arg) = arg else {
            return Err(unknown_key(&key, command));
        };
        let values = match value {
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| scalar(&key, item))
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(&key, other)?],
        };
        options.push(FileOption {
            id: arg.get_id().as_str().to_owned(),
            key,
            values,
            positional: arg.is_positional(),
        });
    }
    Ok(options)
}

fn scalar(key: &str, value: toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(format!(
                "'{key}': give a string, a number, a boolean or a list of those (as on the command line)"
            ));
        }
    })
}

/// "unknown key", with the closest option's name when one is close.
fn unknown_key(key: &str, command: &Command) -> String {
    let names = command
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter_map(|a| {
            a.get_long()
                .map(ToOwned::to_owned)
                .or_else(|| a.is_positional().then(|| a.get_id().as_str().to_owned()))
        });
    let closest = names
        .map(|name| (strsim::jaro_winkler(key, &name), name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, name)) => format!(
            "unknown key '{key}' (did you mean '{name}'?): keys are the long option names without their dashes"
        ),
        None => format!(
            "unknown key '{key}': keys are the long option names without their dashes (see --help)"
        ),
    }
}

/// The command line with the file's options added where neither the command line nor the
/// environment set them. `given(id)` says whether one did.
pub fn merge(
    args: &[OsString],
    file: &[FileOption],
    given: impl Fn(&str) -> bool,
) -> (Vec<OsString>, Vec<String>) {
    let mut merged = args.to_vec();
    let mut positionals = Vec::new();
    let mut from_file = Vec::new();
    for option in file.iter().filter(|o| !given(&o.id)) {
        from_file.push(option.id.clone());
        if option.positional {
            positionals.push(option);
        } else {
            // `--key=value`: a value starting with '-' is not taken for an option.
            merged.extend(
                option
                    .values
                    .iter()
                    .map(|v| OsString::from(format!("--{}={v}", option.key))),
            );
        }
    }
    if !positionals.is_empty() {
        // Positionals in their declared order (source, then target), after `--`.
        positionals.sort_by_key(|o| o.id != "source");
        merged.push("--".into());
        merged.extend(
            positionals
                .iter()
                .flat_map(|o| o.values.iter().map(OsString::from)),
        );
    }
    (merged, from_file)
}

/// The options the command line and the environment give, parsed before the full parse
/// (which the file may complete: it may hold SOURCE and TARGET); `None` when they do not
/// parse, for the full parse to report why.
pub fn given(command: &Command, args: &[OsString]) -> Option<clap::ArgMatches> {
    command
        .clone()
        .mut_args(|a| a.required(false))
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use crate::cli::{Cli, ParseError};

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("cqlmirror-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn parse(args: &[&str]) -> Result<Cli, ParseError> {
        let args: Vec<OsString> = std::iter::once("proxy")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        Cli::parse_with_file("proxy", &args)
    }

    fn source_of(cli: &Cli, name: &str) -> &'static str {
        cli.effective
            .0
            .iter()
            .find(|o| o.name == name)
            .map_or("absent", |o| o.source)
    }

    #[test]
    fn the_file_sets_options_and_the_command_line_wins() {
        let path = write(
            "sets",
            "source = \"10.0.0.1,10.0.0.2\"\ntarget = \"10.1.0.1\"\nwait = false\n\
             wait-timeout = \"2s\"\nprotocol-version = [4, 5]\ndc-map = [\"dc1=east\"]\n",
        );
        let config = path.to_str().unwrap();
        let cli = parse(&["--config", config, "--wait-timeout", "750ms"]).unwrap();
        assert_eq!(cli.source, "10.0.0.1,10.0.0.2");
        assert_eq!(cli.target, "10.1.0.1");
        assert!(!cli.wait);
        assert_eq!(cli.wait_timeout, std::time::Duration::from_millis(750));
        assert_eq!(
            cli.protocol_version
                .iter()
                .map(|v| v.number())
                .collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(source_of(&cli, "wait-timeout"), "command line");
        assert_eq!(source_of(&cli, "wait"), "config file");
        assert_eq!(source_of(&cli, "source"), "config file");
        assert_eq!(source_of(&cli, "request-timeout"), "default");
        // Positionals on the command line win over the file's.
        let cli = parse(&["--config", config, "a", "b"]).unwrap();
        assert_eq!((cli.source.as_str(), cli.target.as_str()), ("a", "b"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_unknown_key_is_named_with_the_closest_option() {
        let path = write(
            "typo",
            "source = \"a\"\ntarget = \"b\"\nwait-timout = \"2s\"\n",
        );
        let Err(ParseError::File(e)) = parse(&["--config", path.to_str().unwrap()]) else {
            panic!("the typo is refused");
        };
        assert!(
            e.contains("unknown key 'wait-timout'") && e.contains("did you mean 'wait-timeout'"),
            "{e}"
        );
        assert!(
            e.contains(path.to_str().unwrap()),
            "the error names the file: {e}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_bad_value_is_refused_as_on_the_command_line() {
        let path = write(
            "value",
            "source = \"a\"\ntarget = \"b\"\nwait-timeout = \"soon\"\n",
        );
        let Err(ParseError::Usage(e)) = parse(&["--config", path.to_str().unwrap()]) else {
            panic!("the value is refused");
        };
        assert!(e.to_string().contains("--wait-timeout"), "{e}");
        let path2 = write("toml", "source = \n");
        let Err(ParseError::File(e)) = parse(&["--config", path2.to_str().unwrap()]) else {
            panic!("broken TOML is refused");
        };
        assert!(e.contains("not valid TOML"), "{e}");
        let Err(ParseError::File(e)) = parse(&["--config", "/nonexistent/cqlmirror.toml"]) else {
            panic!("a missing file is refused");
        };
        assert!(e.contains("cannot read the file"), "{e}");
        for p in [path, path2] {
            let _ = std::fs::remove_file(p);
        }
    }
}
