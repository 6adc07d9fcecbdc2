//! The types of the master's Raft group: what its log entries carry ([`state::Command`]), what
//! applying one answers ([`state::Reply`]), and the handle ([`Raft`]).

use crate::state;
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Types of the master's Raft group.
    pub TypeConfig:
        D = state::Command,
        R = state::Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The master's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
