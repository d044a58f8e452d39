//! What a plugin may reach through the host API, fixed when it is loaded. Today that is
//! which connections; outbound hosts, rooms and key-value access join here as they come.

use crate::config::{Access, PluginConfig};

/// A plugin's grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Which of its tenant's connections the plugin may reach.
    pub connections: Access,
}

impl Grants {
    /// The grants a plugin's config gives it.
    pub fn from_config(config: &PluginConfig) -> Grants {
        Grants {
            connections: config.access,
        }
    }

    /// Whether the plugin may act on connection `id` during an event of `current`.
    pub fn may_reach(&self, id: &str, current: &str) -> bool {
        match self.connections {
            Access::Tenant => true,
            Access::OwnConnection => id == current,
        }
    }

    /// Whether the plugin may act on many connections at once (list, broadcast).
    pub fn may_reach_all(&self) -> bool {
        self.connections == Access::Tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_connection_access_reaches_only_the_current_one() {
        let own = Grants {
            connections: Access::OwnConnection,
        };
        assert!(own.may_reach("a", "a"));
        assert!(!own.may_reach("b", "a"));
        assert!(!own.may_reach_all());
        let tenant = Grants::default();
        assert!(tenant.may_reach("b", "a"));
        assert!(tenant.may_reach_all());
    }
}
