//! The parts of Consul's HTTP API cluster-lab uses: members, leader, agent self, service registration, KV.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::http::{request, HttpError};

/// Consul's default HTTP API address on the local machine.
pub const LOCAL: &str = "127.0.0.1:8500";

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("decoding consul response from {path}: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
}

/// Serf's member status: 1 is alive.
pub const STATUS_ALIVE: u8 = 1;
/// Serf's member status 3: the member left, or was made to (`force-leave`, `cluster-lab node remove`); Consul
/// lists it for 72 hours more.
pub const STATUS_LEFT: u8 = 3;

/// One entry of `/v1/agent/members`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub status: u8,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Member {
    pub fn is_alive(&self) -> bool {
        self.status == STATUS_ALIVE
    }
    /// Gone on purpose: not a problem, only history.
    pub fn has_left(&self) -> bool {
        self.status == STATUS_LEFT
    }
    /// Consul tags servers with `role=consul` and clients with `role=node`.
    pub fn is_server(&self) -> bool {
        self.tags.get("role").map(String::as_str) == Some("consul")
    }
}

/// What `/v1/agent/self` says about the local agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentSelf {
    pub node_name: String,
    pub datacenter: String,
    pub server: bool,
    /// Whether LAN gossip is encrypted (`Stats.serf_lan.encrypted`).
    pub gossip_encrypted: bool,
}

/// A service for `/v1/agent/service/register`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ServiceCheck>,
}

/// A TTL check registered with a service: critical unless updated within `ttl` (`/v1/agent/check/update/…`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    /// `30s`.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// `passing`, `warning` or `critical`: the status until the first update.
    pub status: String,
    /// Consul removes the service once this check has been critical this long (`1m` at least).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
}

/// A node as the catalog knows it, with its Serf health (whether the machine behind the name is alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogNode {
    pub name: String,
    pub address: String,
    /// The `serfHealth` check passes: the machine answers gossip.
    pub alive: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireCatalogNode {
    node: Option<WireNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireNode {
    node: String,
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireCheck {
    #[serde(rename = "CheckID")]
    check_id: String,
    status: String,
}

/// A client for one Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    pub addr: SocketAddr,
    pub timeout: Duration,
    /// Sent as `X-Consul-Token`; without one, requests are anonymous (read-only nodes and services).
    token: Option<String>,
}

impl ConsulClient {
    pub fn new(addr: SocketAddr) -> ConsulClient {
        ConsulClient {
            addr,
            timeout: Duration::from_secs(10),
            token: None,
        }
    }

    /// The agent on this machine, presenting the management token when the cluster secret is known (the settings
    /// first boot copied to /etc/cluster-lab), anonymous (read-only) otherwise.
    pub fn local_for(secret: Option<&crate::config::Secret>) -> ConsulClient {
        let client = ConsulClient::local();
        match secret {
            Some(s) => client.with_token(crate::secret::consul_management_token(s.expose())),
            None => client,
        }
    }

    /// The same client, presenting `token` (the management token derived from the cluster secret).
    pub fn with_token(mut self, token: String) -> ConsulClient {
        self.token = Some(token);
        self
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<super::http::Response, ConsulError> {
        Ok(request(
            self.addr,
            method,
            path,
            body,
            self.token.as_deref(),
            self.timeout,
        )
        .await?)
    }

    /// `method path` with a JSON body, its JSON answer decoded.
    pub(super) async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ConsulError> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        let resp = self.send(method, path, Some(&body)).await?;
        serde_json::from_slice(&resp.body).map_err(|source| ConsulError::Decode {
            path: path.into(),
            source,
        })
    }

    /// The agent on this machine.
    pub fn local() -> ConsulClient {
        ConsulClient::new(LOCAL.parse().expect("valid address"))
    }

    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ConsulError> {
        let resp = self.send("GET", path, None).await?;
        serde_json::from_slice(&resp.body).map_err(|source| ConsulError::Decode {
            path: path.into(),
            source,
        })
    }

    /// LAN members as this agent sees them.
    /// The catalog's node `name` and whether it is alive; `None` when the catalog has no such node.
    pub async fn catalog_node(&self, name: &str) -> Result<Option<CatalogNode>, ConsulError> {
        // Consul answers `null` for an unknown node.
        let found: Option<WireCatalogNode> = self.get(&format!("/v1/catalog/node/{name}")).await?;
        let Some(node) = found.and_then(|f| f.node) else {
            return Ok(None);
        };
        let checks: Vec<WireCheck> = self.get(&format!("/v1/health/node/{name}")).await?;
        let alive = checks
            .iter()
            .any(|c| c.check_id == "serfHealth" && c.status == "passing");
        Ok(Some(CatalogNode {
            name: node.node,
            address: node.address,
            alive,
        }))
    }

    pub async fn members(&self) -> Result<Vec<Member>, ConsulError> {
        self.get("/v1/agent/members").await
    }

    /// The Raft leader's address (`ip:8300`), or `None` while there is none.
    pub async fn leader(&self) -> Result<Option<String>, ConsulError> {
        let leader: String = self.get("/v1/status/leader").await?;
        Ok((!leader.is_empty()).then_some(leader))
    }

    pub async fn agent_self(&self) -> Result<AgentSelf, ConsulError> {
        let v: serde_json::Value = self.get("/v1/agent/self").await?;
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        };
        Ok(AgentSelf {
            node_name: s("/Config/NodeName"),
            datacenter: s("/Config/Datacenter"),
            server: v.pointer("/Config/Server").and_then(|x| x.as_bool()) == Some(true),
            gossip_encrypted: s("/Stats/serf_lan/encrypted") == "true",
        })
    }

    /// Register (or update: registration is idempotent by ID) a service on this agent.
    pub async fn register_service(&self, service: &Service) -> Result<(), ConsulError> {
        let body = serde_json::to_vec(service).expect("service serialises");
        self.send("PUT", "/v1/agent/service/register", Some(&body))
            .await?;
        Ok(())
    }

    /// Remove the service `id` from this agent (and so from the catalog).
    pub async fn deregister_service(&self, id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/deregister/{id}");
        self.send("PUT", &path, Some(b"")).await?;
        Ok(())
    }

    /// Set the TTL check `check_id` to `status` (`passing`, `warning`, `critical`) with `output`.
    pub async fn update_check(
        &self,
        check_id: &str,
        status: &str,
        output: &str,
    ) -> Result<(), ConsulError> {
        let body = serde_json::json!({ "Status": status, "Output": output });
        let path = format!("/v1/agent/check/update/{check_id}");
        self.send("PUT", &path, Some(body.to_string().as_bytes()))
            .await?;
        Ok(())
    }

    /// IDs of the services registered on this agent.
    pub async fn services(&self) -> Result<Vec<String>, ConsulError> {
        let map: std::collections::BTreeMap<String, serde_json::Value> =
            self.get("/v1/agent/services").await?;
        Ok(map.into_keys().collect())
    }

    /// Make `node` leave the cluster now (`/v1/agent/force-leave`): for a machine that is gone for good.
    pub async fn force_leave(&self, node: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/force-leave/{node}");
        self.send("PUT", &path, Some(b"")).await?;
        Ok(())
    }

    /// Store `value` under `key`.
    pub async fn kv_put(&self, key: &str, value: &[u8]) -> Result<(), ConsulError> {
        let path = format!("/v1/kv/{key}");
        self.send("PUT", &path, Some(value)).await?;
        Ok(())
    }

    /// The value under `key`, or `None` if there is none.
    pub async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, ConsulError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            value: Option<String>,
        }
        let path = format!("/v1/kv/{key}");
        let entries: Vec<Entry> = match self.get(&path).await {
            Ok(e) => e,
            Err(ConsulError::Http(HttpError::Status { status: 404, .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(value) = entries.into_iter().next().and_then(|e| e.value) else {
            return Ok(Some(Vec::new()));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .map_err(|e| ConsulError::Decode {
                path,
                source: serde::de::Error::custom(e),
            })?;
        Ok(Some(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_members() {
        let json = r#"[{"Name":"master","Addr":"192.168.200.1","Port":8301,"Tags":{"role":"consul","dc":"lab"},
            "Status":1,"ProtocolMin":1},{"Name":"node-1","Addr":"192.168.200.101","Port":8301,
            "Tags":{"role":"node"},"Status":4}]"#;
        let members: Vec<Member> = serde_json::from_str(json).unwrap();
        assert_eq!(members.len(), 2);
        assert!(members[0].is_alive() && members[0].is_server());
        assert!(!members[1].is_alive() && !members[1].is_server());
    }

    #[test]
    fn service_uses_consul_field_names() {
        let s = Service {
            id: "docker".into(),
            name: "docker".into(),
            address: None,
            port: None,
            tags: vec!["swarm-manager".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"ID":"docker","Name":"docker","Tags":["swarm-manager"]}"#
        );
    }
}
