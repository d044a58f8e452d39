//! Origins a plugin may reach over HTTP (`allowed_outbound_hosts`): scheme, host and
//! port, nothing else. A path, a query, userinfo or a wildcard host would make a grant
//! mean more than it says, so they are refused when the config is read.

use std::fmt;

/// One granted origin, e.g. `http://127.0.0.1:7070` or `https://auth.example.com:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `https` (true) or `http` (false).
    pub https: bool,
    /// The host, lower-cased: a DNS name, an IPv4 address or a bracketed IPv6 address.
    pub host: String,
    /// The port; `None` for `*` (any port). Without a port the scheme's default is meant.
    pub port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port|:*]`, with at most a trailing `/`.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("{text:?} is not an origin: write scheme://host:port, e.g. \"http://127.0.0.1:7070\"")
        })?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "{text:?}: scheme {other:?} is not supported; use http or https"
                ));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!(
                "{text:?}: an origin has no path, query or fragment; grant scheme://host:port only"
            ));
        }
        if authority.contains('@') {
            return Err(format!("{text:?}: an origin has no userinfo (user@)"));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{text:?}: expected host or host:port after the scheme"))?;
        if host.is_empty() {
            return Err(format!("{text:?}: the host is empty"));
        }
        if host.contains('*') {
            return Err(format!(
                "{text:?}: `*` is allowed only as a port (scheme://host:*), never in a host"
            ));
        }
        if !valid_host(host) {
            return Err(format!(
                "{text:?}: {host:?} is not a host name or IP address"
            ));
        }
        let port = match port {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("{text:?}: port {port:?} is not 1 to 65535 or *"))?,
            ),
        };
        Ok(Origin {
            https,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is within this grant. `host` must be
    /// lower-cased and `port` explicit (the scheme's default filled in).
    pub fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        self.https == https && self.host == host && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(port) => write!(f, "{scheme}://{}:{port}", self.host),
            None => write!(f, "{scheme}://{}:*", self.host),
        }
    }
}

/// Splits `host[:port]`, keeping a bracketed IPv6 address whole.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        return match &rest[end + 1..] {
            "" => Some((host, None)),
            tail => Some((host, Some(tail.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::Origin;

    #[test]
    fn origins_parse_with_default_and_any_ports() {
        let o = Origin::parse("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port),
            (false, "127.0.0.1", Some(7070))
        );
        assert_eq!(
            Origin::parse("https://Auth.Example.com").unwrap().port,
            Some(443)
        );
        assert_eq!(Origin::parse("http://example.com/").unwrap().port, Some(80));
        let any = Origin::parse("https://api.example.com:*").unwrap();
        assert!(any.allows(true, "api.example.com", 8443));
        assert!(!any.allows(false, "api.example.com", 8443));
        let v6 = Origin::parse("http://[::1]:9000").unwrap();
        assert!(v6.allows(false, "[::1]", 9000));
        assert_eq!(v6.to_string(), "http://[::1]:9000");
    }

    #[test]
    fn grants_that_would_mean_more_than_they_say_are_refused() {
        for bad in [
            "127.0.0.1:7070",
            "ftp://example.com",
            "http://*.example.com",
            "http://*:80",
            "http://user@example.com",
            "http://example.com/api",
            "http://example.com?x=1",
            "http://example.com:0",
            "http://example.com:70000",
            "http://",
            "http://exa mple.com",
            "http://[::1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_grant_allows_its_origin_only() {
        let o = Origin::parse("http://127.0.0.1:7070").unwrap();
        assert!(o.allows(false, "127.0.0.1", 7070));
        assert!(!o.allows(false, "127.0.0.1", 7071));
        assert!(!o.allows(true, "127.0.0.1", 7070));
        assert!(!o.allows(false, "127.0.0.2", 7070));
    }
}
