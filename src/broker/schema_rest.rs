//! The schema registry's Confluent REST API as the broker serves it on its admin listener:
//! the caller is the client certificate's principal (the admin listener's [`Caller`]) and
//! subjects are protected by the broker's ACL like topics.

use std::sync::Arc;

use axum::http::request::Parts;
use axum::Router;

use super::acl::{Acl, Permission};
use super::admin::Caller;
use crate::schema::rest::{self, Operation, Resource, RestAuthorizer};
use crate::schema::Registry;

/// Authorises REST calls with the broker's ACL.
#[derive(Debug, Clone)]
pub struct AclAuthorizer {
    acl: Acl,
}

impl AclAuthorizer {
    /// Authorises with `acl`.
    pub fn new(acl: Acl) -> AclAuthorizer {
        AclAuthorizer { acl }
    }
}

impl RestAuthorizer for AclAuthorizer {
    /// The client certificate's principal. On the plaintext development listener (no
    /// certificate) the caller is `anonymous` when the broker has no ACL file, and is
    /// refused (401) when it has one.
    fn principal(&self, request: &Parts) -> Option<String> {
        match request.extensions.get::<Caller>().map(|c| c.principal.clone()) {
            Some(Some(p)) => Some(p.to_string()),
            Some(None) if self.acl.is_allow_all() => Some("anonymous".to_owned()),
            _ => None,
        }
    }

    fn allowed(&self, principal: &str, operation: Operation, resource: Resource<'_>) -> bool {
        let perm = match operation {
            Operation::Read => Permission::Read,
            Operation::Write => Permission::Write,
            Operation::Admin => Permission::Admin,
        };
        let ok = match resource {
            Resource::Subject(s) => self.acl.allows_subject(principal, s, perm),
            Resource::Global => self.acl.allows_subject(principal, "*", perm),
            Resource::Topic(t) => self.acl.allows(principal, t, perm),
        };
        if !ok {
            tracing::warn!(principal, ?resource, permission = %perm, "schema registry REST call denied by ACL");
        }
        ok
    }
}

/// The REST router over `registry`, authorised by `acl`: mount it at the root of the
/// admin listener (`Admin::merge` / `AdminHandle::merge`).
pub fn router(registry: Arc<Registry>, acl: Acl) -> Router {
    rest::router(registry, Arc::new(AclAuthorizer::new(acl)))
}
