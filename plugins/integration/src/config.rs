//! The plugin's config: which backend, in which shape, under which names.

use wsgate_sdk::config;

/// The request and response contract spoken with the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// AWS API Gateway's Lambda proxy event and result.
    Aws,
    /// Yandex API Gateway's HTTP integration.
    Yandex,
    /// West Connectivity's `websocketInfo`.
    West,
}

impl Shape {
    /// The config value naming this shape.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Aws => "aws",
            Shape::Yandex => "yandex",
            Shape::West => "west",
        }
    }
}

/// Everything read from the config, once per instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backend URL every event is POSTed to.
    pub url: String,
    /// The contract.
    pub shape: Shape,
    /// AWS shape: the REQUEST authorizer's URL, if any.
    pub authorizer_url: Option<String>,
    /// AWS shape: `requestContext.domainName`; `None` falls back to the `Host` the
    /// client connected to.
    pub domain_name: Option<String>,
    /// AWS shape: the scheme of `requestContext.managementEndpoint`, `http` or `https`;
    /// by default the gateway's (`https` when its listeners have `[tls]`).
    pub management_scheme: String,
    stage: Option<String>,
    api_id: Option<String>,
    /// AWS shape: the region in the authorizer's `methodArn`.
    pub region: String,
    /// AWS shape: the account in the authorizer's `methodArn`.
    pub account: String,
    /// Yandex shape: client request headers passed to the backend on every event, as a
    /// Yandex spec lists them under the integration's `headers`.
    pub forward_headers: Vec<String>,
}

/// A config value, treating an empty string as unset.
fn get(key: &str) -> Option<String> {
    config::get(key).filter(|value| !value.trim().is_empty())
}

impl Config {
    /// Reads the config. The error names the wrong key and says why, for the log.
    pub fn load() -> Result<Config, String> {
        let url = get("url").ok_or_else(|| {
            "integration plugin: config key `url` (the backend URL) is missing".to_owned()
        })?;
        let shape = match get("shape").as_deref().map(str::trim) {
            None | Some("aws") => Shape::Aws,
            Some("yandex") => Shape::Yandex,
            Some("west") => Shape::West,
            Some(other) => {
                return Err(format!(
                    "integration plugin: config key `shape` is {other:?}; expected \"aws\", \"yandex\" or \"west\""
                ));
            }
        };
        let authorizer_url = get("authorizer_url");
        if authorizer_url.is_some() && shape != Shape::Aws {
            return Err(format!(
                "integration plugin: config key `authorizer_url` works with shape \"aws\" only, not {:?}",
                shape.name()
            ));
        }
        let management_scheme = get("management_scheme")
            .or_else(|| get("wsgate.management_scheme"))
            .unwrap_or_else(|| "http".to_owned());
        if management_scheme != "http" && management_scheme != "https" {
            return Err(format!(
                "integration plugin: config key `management_scheme` is {management_scheme:?}; expected \"http\" or \"https\""
            ));
        }
        Ok(Config {
            url,
            shape,
            authorizer_url,
            domain_name: get("domain_name").or_else(|| get("wsgate.domain_name")),
            management_scheme,
            stage: get("stage"),
            api_id: get("api_id"),
            region: get("region").unwrap_or_else(|| "local".to_owned()),
            account: get("account").unwrap_or_else(|| "000000000000".to_owned()),
            forward_headers: get("forward_headers")
                .map(|list| {
                    list.split(',')
                        .map(|name| name.trim().to_ascii_lowercase())
                        .filter(|name| !name.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `requestContext.stage`: the config's `stage`, else the tenant, so that
    /// `https://{domainName}/{stage}` is the tenant's management endpoint.
    pub fn stage(&self, tenant: &str) -> String {
        self.stage.clone().unwrap_or_else(|| tenant.to_owned())
    }

    /// `requestContext.apiId`: the config's `api_id`, else the tenant.
    pub fn api_id(&self, tenant: &str) -> String {
        self.api_id.clone().unwrap_or_else(|| tenant.to_owned())
    }
}
