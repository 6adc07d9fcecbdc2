//! The cluster itself: its name, the chunkservers' identities and draining flags, and the master
//! ids retired from the group.

use super::{err, ok, MetaReplyData, MetaReplyKind, Reply, State};
use serde::{Deserialize, Serialize};
use tinydfs_proto::meta::*;
use tinydfs_proto::*;

/// A registered chunkserver's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub addr: String,
    pub registered_ms: u64,
    /// An operator asked for this node to be drained: nothing new is placed on it and its
    /// chunks are copied elsewhere, after which it holds nothing and may be removed.
    #[serde(default)]
    pub draining: bool,
}

impl State {
    /// Names the cluster, unless it has a name already.
    pub(super) fn init(&mut self, cluster_id: &str) -> Reply {
        if self.cluster_id.is_empty() {
            self.cluster_id = cluster_id.to_string();
        }
        ok(MetaReplyData::Done)
    }

    /// Gives a chunkserver the next free id.
    pub(super) fn register_node(&mut self, addr: &str, now: u64) -> Reply {
        self.next_node_id = self.next_node_id.max(1);
        let id = self.next_node_id;
        self.next_node_id += 1;
        self.nodes.insert(
            id,
            NodeIdentity {
                addr: addr.to_string(),
                registered_ms: now,
                draining: false,
            },
        );
        Reply(Ok(MetaReplyKind::NodeId(id)))
    }

    /// Records that a master id left the group, so that it is never used again.
    pub(super) fn retire_master(&mut self, id: u64) -> Reply {
        self.retired_masters.insert(id);
        ok(MetaReplyData::Done)
    }

    /// Starts or cancels the draining of a known chunkserver.
    pub(super) fn drain(&mut self, node: NodeId, drain: bool) -> Reply {
        match self.nodes.get_mut(&node) {
            Some(n) => {
                n.draining = drain;
                ok(MetaReplyData::Done)
            }
            None => err(MetaError::BadRequest(format!(
                "no chunkserver has id {node}"
            ))),
        }
    }
}
