//! Consul's ACLs as first boot leaves them: default deny (see [`super::config::Acl`]), the management token derived
//! from the cluster secret, and the anonymous token given one read-only policy so the UI at :8500 shows every node
//! and service to anyone on the home LAN and nothing else.
//!
//! Inspect, then act: the policy is created only when missing (updated when its rules changed), the anonymous token
//! updated only when it lacks the policy, so a second first boot (or a power cut half-way) changes nothing.

use serde::{Deserialize, Serialize};

use super::api::{ConsulClient, ConsulError};

/// Name of the anonymous token's policy.
pub const ANONYMOUS_POLICY: &str = "cluster-lab-anonymous-read";
/// Its rules (HCL), a real file beside this module.
pub const ANONYMOUS_RULES: &str = include_str!("anonymous-policy.hcl");
/// Consul's built-in anonymous token (its accessor ID is fixed).
pub const ANONYMOUS_TOKEN: &str = "00000000-0000-0000-0000-000000000002";

/// What [`ensure_anonymous_read`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AlreadyDone,
    Applied,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyListEntry {
    #[serde(rename = "ID")]
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    rules: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyBody<'a> {
    name: &'a str,
    description: &'a str,
    rules: &'a str,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct PolicyLink {
    #[serde(default, rename = "ID", skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Token {
    #[serde(default)]
    description: String,
    #[serde(default)]
    policies: Option<Vec<PolicyLink>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TokenBody<'a> {
    #[serde(rename = "AccessorID")]
    accessor_id: &'a str,
    description: &'a str,
    policies: Vec<PolicyLink>,
}

/// Give the anonymous token the read-only policy (creating or correcting the policy first). Needs the management
/// token on `consul`; fails until the ACL system is bootstrapped, a moment after the server leads.
pub async fn ensure_anonymous_read(consul: &ConsulClient) -> Result<Outcome, ConsulError> {
    let mut outcome = Outcome::AlreadyDone;
    let policies: Vec<PolicyListEntry> = consul.get("/v1/acl/policies").await?;
    let body = PolicyBody {
        name: ANONYMOUS_POLICY,
        description: "cluster-lab: anyone may see nodes and services, nothing else",
        rules: ANONYMOUS_RULES,
    };
    match policies.iter().find(|p| p.name == ANONYMOUS_POLICY) {
        None => {
            let _: Policy = consul.send_json("PUT", "/v1/acl/policy", &body).await?;
            outcome = Outcome::Applied;
        }
        Some(found) => {
            let policy: Policy = consul.get(&format!("/v1/acl/policy/{}", found.id)).await?;
            if policy.rules != ANONYMOUS_RULES {
                let path = format!("/v1/acl/policy/{}", policy.id);
                let _: Policy = consul.send_json("PUT", &path, &body).await?;
                outcome = Outcome::Applied;
            }
        }
    }
    let path = format!("/v1/acl/token/{ANONYMOUS_TOKEN}");
    let token: Token = consul.get(&path).await?;
    let mut links = token.policies.unwrap_or_default();
    if !links.iter().any(|l| l.name == ANONYMOUS_POLICY) {
        links.push(PolicyLink {
            id: String::new(),
            name: ANONYMOUS_POLICY.into(),
        });
        let body = TokenBody {
            accessor_id: ANONYMOUS_TOKEN,
            description: if token.description.is_empty() {
                "Anonymous Token"
            } else {
                &token.description
            },
            policies: links,
        };
        let _: serde_json::Value = consul.send_json("PUT", &path, &body).await?;
        outcome = Outcome::Applied;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anonymous_policy_reads_nodes_and_services_and_nothing_else() {
        let rules: Vec<&str> = ANONYMOUS_RULES
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            rules,
            [
                "node_prefix \"\" {",
                "policy = \"read\"",
                "}",
                "service_prefix \"\" {",
                "policy = \"read\"",
                "}"
            ]
        );
    }

    #[test]
    fn token_update_names_the_policy_and_keeps_the_accessor() {
        let body = TokenBody {
            accessor_id: ANONYMOUS_TOKEN,
            description: "Anonymous Token",
            policies: vec![PolicyLink {
                id: String::new(),
                name: ANONYMOUS_POLICY.into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            format!(
                "{{\"AccessorID\":\"{ANONYMOUS_TOKEN}\",\"Description\":\"Anonymous Token\",\
                 \"Policies\":[{{\"Name\":\"{ANONYMOUS_POLICY}\"}}]}}"
            )
        );
    }
}
