//! Compile detcd's own description of etcd 3.4's v3 schema (proto/) into prost messages and
//! tonic client and server stubs: protox parses the files (no protoc needed) and hands the
//! descriptor set to tonic-prost-build.

const FILES: [&str; 3] = [
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
