//! The effective configuration: every option's value and where it came from, with secrets
//! masked, for the admin API (`GET /admin/config`).

use clap::ArgMatches;
use clap::parser::ValueSource;

/// One option as in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveOption {
    /// The long option name, without dashes (or the positional's name).
    pub name: String,
    /// The values as given (several for repeated options); `***` for secrets.
    pub values: Vec<String>,
    /// `command line`, `environment`, `config file` or `default`.
    pub source: &'static str,
}

/// Every option with a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveOptions(pub Vec<EffectiveOption>);

/// Options whose values are secrets (their files are not).
pub(crate) fn is_secret(name: &str) -> bool {
    (name.contains("password") || name.contains("token")) && !name.ends_with("-file")
}

impl EffectiveOptions {
    /// `from_file`: the ids the config file set (clap saw them on the command line).
    pub fn from_matches(
        command: &clap::Command,
        matches: &ArgMatches,
        from_file: &[String],
    ) -> Self {
        let mut options = Vec::new();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(raw) = matches.get_raw(id) else {
                continue;
            };
            let name = arg
                .get_long()
                .map_or_else(|| id.to_owned(), ToOwned::to_owned);
            let values = if is_secret(&name) {
                vec!["***".to_owned()]
            } else {
                raw.map(|v| v.to_string_lossy().into_owned()).collect()
            };
            let source = match matches.value_source(id) {
                _ if from_file.iter().any(|f| f == id) => "config file",
                Some(ValueSource::CommandLine) => "command line",
                Some(ValueSource::EnvVariable) => "environment",
                _ => "default",
            };
            options.push(EffectiveOption {
                name,
                values,
                source,
            });
        }
        Self(options)
    }

    /// A JSON object: `{"name": {"value": ..., "source": ...}}`; repeated options as arrays.
    pub fn to_json(&self) -> String {
        let mut out = serde_json::Map::new();
        for option in &self.0 {
            let value = match option.values.as_slice() {
                [one] => serde_json::Value::from(one.as_str()),
                many => serde_json::Value::from(many.to_vec()),
            };
            out.insert(
                option.name.clone(),
                serde_json::json!({ "value": value, "source": option.source }),
            );
        }
        serde_json::Value::Object(out).to_string()
    }
}
