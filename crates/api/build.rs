//! Generates the Rust API from `proto/` with the protoc that `protoc-bin-vendored` ships, so
//! no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time (not `env!`): a build script binary cached by another checkout
    // sharing the target directory must still look in this one.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("execbridge/v1/orders.proto"),
        root.join("execbridge/v1/execution_service.proto"),
        root.join("execbridge/v1/market_data_service.proto"),
        root.join("execbridge/v1/admin_service.proto"),
        root.join("execbridge/internal/v1/executor_service.proto"),
        root.join("execbridge/internal/v1/journal.proto"),
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // No default stubs: they change the shape of the streaming server traits that the
    // gateway, executor and marketdata implement, and a missing RPC should fail the build
    // rather than answer UNIMPLEMENTED at run time.
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("execbridge_descriptor.bin"))
        .compile_with_config(
            config,
            &files,
            &[root.clone(), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
