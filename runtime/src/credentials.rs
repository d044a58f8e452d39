//! Which tenant a management credential belongs to: the bearer keys and AWS access keys
//! of one snapshot's tenants, indexed. Replay protection, which outlives snapshots,
//! stays with the admin listener.

use std::collections::HashMap;
use std::sync::Arc;

use crate::tenant::Tenant;

/// The credentials of every tenant of a snapshot.
#[derive(Debug, Default)]
pub struct Keys {
    /// Bearer key → tenant.
    bearer: HashMap<String, Arc<Tenant>>,
    /// AWS access key id → tenant and secret access key.
    aws: HashMap<String, (Arc<Tenant>, String)>,
}

impl Keys {
    /// Indexes the credentials of `tenants`.
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a Arc<Tenant>>) -> Keys {
        let mut keys = Keys::default();
        for tenant in tenants {
            for key in &tenant.credentials.bearer_keys {
                keys.bearer.insert(key.expose().to_owned(), tenant.clone());
            }
            for credential in &tenant.credentials.aws {
                keys.aws.insert(
                    credential.access_key_id.clone(),
                    (
                        tenant.clone(),
                        credential.secret_access_key.expose().to_owned(),
                    ),
                );
            }
        }
        keys
    }

    /// The tenant whose bearer key this is.
    pub fn bearer(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.bearer.get(key)
    }

    /// The tenant and secret of an AWS access key id.
    pub fn aws(&self, access_key_id: &str) -> Option<(&Arc<Tenant>, &str)> {
        self.aws
            .get(access_key_id)
            .map(|(tenant, secret)| (tenant, secret.as_str()))
    }
}
