//! Who may do what on the test cluster: bearer tokens, each with a list of permissions, held to them as
//! RBAC holds a service account — so that a test run with exactly the permissions tideway declares fails
//! if the code needs one more. A request without a token is the cluster's administrator's.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// One permission, as an RBAC rule grants it: a verb on a resource of an API group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The API group, `""` for the core group.
    pub group: String,
    /// The resource, with its subresource after a slash (`deployments/scale`).
    pub resource: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
}

impl Permission {
    /// `verb` on `resource` of `group`.
    pub fn new(group: &str, resource: &str, verb: &str) -> Self {
        Permission {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
        }
    }
}

/// What a request asks to do, as the authorizer sees it.
pub(crate) struct Attempt<'a> {
    pub(crate) group: &'a str,
    pub(crate) resource: String,
    pub(crate) verb: &'static str,
}

/// The verdict on a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// No such token (401).
    Unauthenticated,
    /// The token lacks the permission (403).
    Forbidden,
}

/// The tokens the cluster knows.
#[derive(Default)]
pub(crate) struct Access {
    tokens: Mutex<HashMap<String, Vec<Permission>>>,
}

impl Access {
    /// A new token granting `permissions`.
    pub(crate) fn issue(&self, permissions: Vec<Permission>) -> String {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let token = format!("test-token-{}", tokens.len() + 1);
        tokens.insert(token.clone(), permissions);
        token
    }

    /// Whether the bearer of `authorization` (the header's value, if any) may make `attempt`.
    pub(crate) fn check(&self, authorization: Option<&str>, attempt: &Attempt<'_>) -> Verdict {
        let Some(header) = authorization else {
            return Verdict::Allowed;
        };
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(permissions) = header
            .strip_prefix("Bearer ")
            .and_then(|token| tokens.get(token.trim()))
        else {
            return Verdict::Unauthenticated;
        };
        let granted = permissions
            .iter()
            .any(|p| p.group == attempt.group && p.resource == attempt.resource && p.verb == attempt.verb);
        if granted {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        }
    }
}
