//! etcd 3.4's v3 wire schema for detcd: the messages of packages `etcdserverpb`, `mvccpb`,
//! `authpb`, `v3lockpb` and `v3electionpb` (prost), and client and server stubs of the KV, Watch, Lease, Cluster, Maintenance
//! and Auth services and of the Lock and Election services (tonic, without
//! `tonic::transport`).
//!
//! The `.proto` files under `proto/` are detcd's own description of etcd 3.4's wire interface:
//! the same packages, services, methods, messages, field names and numbers (which is what a
//! client puts on the wire), none of etcd's Go generation options or HTTP annotations.
//! `build.rs` compiles them with protox, a protobuf compiler in Rust, so building needs cargo
//! alone. The stubs are `tower` services and clients generic over any gRPC service: the node
//! serves them through its own hyper connections and the simulator calls them over its own
//! HTTP/2 connections on simulated TCP (see `detcd_rt::h2`).

/// `mvccpb`: the stored key-value pair and the watch event.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// `authpb`: users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// `etcdserverpb`: the six services and their requests and responses.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// `v3lockpb`: the distributed lock service (etcd's `v3lock`, served beside the six).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// `v3electionpb`: the leader election service (etcd's `v3election`, served beside the six).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

pub mod gateway;
