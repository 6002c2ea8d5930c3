//! Generated protobuf messages and gRPC stubs for `minispod.v1`, shared by
//! the control plane and the node agent, plus the encoded file descriptor set
//! that the control plane serves through gRPC reflection.

/// The codec of every generated client and server (small buffers).
pub mod codec;

/// The `minispod.v1` package: messages, `*_client` and `*_server` modules.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("minispod.v1");
}

/// Encoded `FileDescriptorSet` of every MiniSpod proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("minispod_descriptor");

impl v1::Role {
    /// The role's enum name without the prefix, e.g. `ADMINISTRATOR`.
    pub fn short_name(self) -> &'static str {
        self.as_str_name().trim_start_matches("ROLE_")
    }
}

/// The well-known types the generated code uses (Timestamp, ...).
pub use prost_types;
