//! Raft messages between masters, over the internal HTTP listener (JSON bodies, cluster secret).
//!
//! A group of one never sends any; the network is here so that more members are configuration.

use crate::raft::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

type NodeId = u64;

/// Paths of the Raft endpoints on a master's internal listener.
pub mod paths {
    pub const APPEND: &str = "/internal/v1/raft/append";
    pub const VOTE: &str = "/internal/v1/raft/vote";
    pub const SNAPSHOT: &str = "/internal/v1/raft/snapshot";
}

/// Creates a connection per peer; all share one HTTP client.
pub struct Network {
    pub http: reqwest::Client,
    pub secret: String,
}

/// A connection to one peer master.
pub struct Conn {
    http: reqwest::Client,
    secret: String,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Conn {
        Conn {
            http: self.http.clone(),
            secret: self.secret.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Conn {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let rb = self
            .http
            .post(tinydfs_proto::client::url(&self.addr, path))
            .timeout(option.hard_ttl())
            .json_body(req);
        let rb = tinydfs_proto::client::internal_headers(rb, &self.secret, "");
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let res: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// JSON bodies without pulling in reqwest's `json` feature.
trait JsonBody {
    fn json_body<T: Serialize>(self, body: &T) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body<T: Serialize>(self, body: &T) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(paths::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(paths::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(paths::VOTE, &rpc, &option).await
    }
}
