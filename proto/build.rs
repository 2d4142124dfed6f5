//! Compile detcd's own description of etcd 3.4's v3 schema (proto/) into prost messages and
//! tonic client and server stubs: protox parses the files (no protoc needed) and hands the
//! descriptor set to tonic-prost-build. pbjson-build then writes serde impls for every message
//! from the same descriptor set, in the JSON dialect of etcd's gateway: proto field names,
//! 64-bit integers as strings, bytes as base64, defaults omitted, unknown fields ignored.

use prost::Message;

const FILES: [&str; 5] = [
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    let descriptors = fds.encode_to_vec();
    // The gateway's JSON reader walks the schema at run time (src/gateway.rs).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("etcd_descriptors.bin"), &descriptors)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
