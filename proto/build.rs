//! Generates the gRPC code with protox (a pure-Rust protobuf compiler), so
//! building needs no installed protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/als_worker.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/als_worker.proto");
    Ok(())
}
