//! Compiles the .proto files with protox (a protobuf compiler in pure Rust, so no `protoc` is
//! needed on the build machine) and generates tonic code into OUT_DIR, plus the encoded
//! descriptor set that the services serve through gRPC reflection.

use prost::Message;

const PROTOS: &[&str] = &[
    "berth/types/v1/types.proto",
    "berth/store/v1/store.proto",
    "berth/registry/v1/registry.proto",
    "berth/runtime/v1/runtime.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("berth_descriptor.bin"), fds.encode_to_vec())?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes([".berth.store.v1.WriteRequest.data", ".berth.store.v1.ReadResponse.data"])
        .compile_fds(fds)?;
    Ok(())
}
