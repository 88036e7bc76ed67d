//! The execbridge gRPC API, generated from `proto/` at build time, and its conversions.
//!
//! # Layout
//! - [`v1`]: the public contract (`execbridge.v1`).
//! - [`internal::v1`]: gateway -> executor traffic (`execbridge.internal.v1`).
//! - [`convert`]: proto <-> domain at one boundary; requests from outside become validated
//!   domain values or a list of field violations.
//! - [`status`]: building and reading rich gRPC statuses (`ErrorInfo`, `BadRequest`).

pub mod convert;
pub mod status;

#[cfg(test)]
mod tests {
    #[test]
    fn the_public_descriptor_set_leaves_out_the_internal_api() {
        let public = super::public_descriptor_set();
        let all = super::all_descriptor_set();
        assert!(
            public
                .file
                .iter()
                .all(|f| !f.package().starts_with("execbridge.internal"))
        );
        assert!(public.file.iter().any(|f| f.package() == "execbridge.v1"));
        assert!(
            all.file
                .iter()
                .any(|f| f.package() == "execbridge.internal.v1")
        );
    }
}

/// The public contract.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("execbridge.v1");
}

/// Internal contracts, not for clients.
pub mod internal {
    /// Gateway -> executor.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("execbridge.internal.v1");
    }
}

/// Encoded descriptors of every execbridge proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("execbridge_descriptor");

/// Descriptors of the public contract only (`execbridge.v1`), for the gateway's
/// reflection: the internal API is not advertised to clients.
///
/// # Panics
/// Never: the embedded set is produced by the build from the same protos.
pub fn public_descriptor_set() -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    #[allow(clippy::expect_used)]
    let mut set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the build embeds a valid descriptor set");
    set.file
        .retain(|f| !f.package().starts_with("execbridge.internal."));
    set
}

/// Descriptors of every execbridge proto, public and internal.
///
/// # Panics
/// Never: the embedded set is produced by the build from the same protos.
pub fn all_descriptor_set() -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    #[allow(clippy::expect_used)]
    prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the build embeds a valid descriptor set")
}

/// The `ErrorInfo.domain` of every execbridge error.
pub const ERROR_DOMAIN: &str = "execbridge.dev";
