//! Generates the Rust types of `proto/**/*.proto` with protox (a pure-Rust protobuf compiler, so no
//! system `protoc`) and tonic-prost-build (prost messages; gRPC services once the StoreAPI lands).

use std::error::Error;

/// The .proto files compiled, relative to `proto/`.
const PROTOS: &[&str] = &["prometheus/types.proto", "prometheus/remote.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().build_server(false).build_client(false).compile_fds(fds)?;
    Ok(())
}
