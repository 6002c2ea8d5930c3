//! The protobuf codec every generated client and server uses: prost with
//! small initial buffers.
//!
//! tonic's default gives each stream an 8 KiB encode and an 8 KiB decode
//! buffer up front. MiniSpod's messages are a few hundred bytes and the
//! control plane holds one long-lived stream per worker, so those buffers
//! were a quarter of its memory per agent. The buffers still grow for a
//! larger message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per stream.
const BUFFER_SIZE: usize = 1024;
/// Encoded bytes after which a streaming encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost with [`BUFFER_SIZE`] initial buffers.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
