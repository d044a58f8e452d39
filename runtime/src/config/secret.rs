//! [`Secret`]: a value written in the file or read from the environment, redacted in `Debug`.

use serde::Deserialize;

/// A secret written in the file (`"text"`) or read from the environment when the
/// config is loaded (`{ env = "NAME" }`), so secrets need not live in the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Value(String),
            Env { env: String },
        }
        match Form::deserialize(de) {
            Ok(Form::Value(value)) if !value.is_empty() => Ok(Secret(value)),
            Ok(Form::Value(_)) => Err(serde::de::Error::custom("a secret may not be empty")),
            Ok(Form::Env { env }) => match std::env::var(&env) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                _ => Err(serde::de::Error::custom(format!(
                    "environment variable {env} is not set (or empty); set it or write the secret in the file"
                ))),
            },
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or { env = \"VARIABLE\" }",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, error, parse};

    #[test]
    fn secrets_come_from_the_file_or_the_environment() {
        // SAFETY: tests in this module touch only this variable.
        unsafe { std::env::set_var("WSGATE_TEST_SECRET", "from-env") };
        let config = parse(&format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [\"k1\", {{ env = \"WSGATE_TEST_SECRET\" }}]\n"
        ))
        .unwrap();
        let keys: Vec<_> = config.tenants["demo"]
            .credentials
            .bearer_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k1", "from-env"]);
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [{{ env = \"WSGATE_TEST_UNSET\" }}]\n"
        ));
        assert!(err.contains("WSGATE_TEST_UNSET is not set"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_value() {
        let secret = Secret("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
