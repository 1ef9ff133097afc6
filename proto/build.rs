//! Generates the Rust types of `proto/**/*.proto` with protox (a pure-Rust protobuf compiler, so no
//! system `protoc`) and tonic-prost-build (prost messages, tonic gRPC clients and servers).

use std::error::Error;

/// The .proto files compiled, relative to `proto/`.
const PROTOS: &[&str] = &[
    "prometheus/types.proto",
    "prometheus/remote.proto",
    "thanos/types.proto",
    "thanos/store.proto",
    "thanos/info.proto",
    "hintspb/hints.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).build_transport(false).compile_fds(fds)?;
    Ok(())
}
