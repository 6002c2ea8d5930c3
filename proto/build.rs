//! Compiles proto/minispod/v1/*.proto with protox (pure Rust, no system
//! protoc) and generates prost messages and tonic clients and servers.

use std::{env, fs, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = root.join("minispod/v1");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("proto/minispod/v1 exists")
        .map(|e| e.expect("readable proto dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root]).unwrap_or_else(|e| panic!("proto error: {e}"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    fs::write(
        out.join("minispod_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("write descriptor set");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // AgentService has an RPC named Connect, which would clash with the
        // generated `connect` constructor: clients are built with `new(channel)`.
        .build_transport(false)
        // Small per-stream buffers: see src/codec.rs.
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)
        .expect("generate code");
}
