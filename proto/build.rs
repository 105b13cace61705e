//! Generates the gRPC code with protox (a pure-Rust protobuf compiler), so
//! building needs no installed protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/als_worker.proto"], ["proto"])?;
    // `bytes` fields as `Bytes`: decoding slices the receive buffer instead of copying it.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/als_worker.proto");
    Ok(())
}
