//! Request-response framing for Raclette's protocols: one message per stream, read to
//! the end with a hard size limit. The bytes are decoded by the application, so a
//! malformed request still gets an answer saying why.
//!
//! A request over the limit is not an I/O error here: libp2p's request-response drops
//! failed inbound reads without telling the application, so the sender would never be
//! logged or penalised. It arrives as [`Frame::Oversized`] instead, for the application
//! to refuse and count against the sender.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

/// Raw messages with per-direction size limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitedBytes {
    /// The largest request accepted.
    pub max_request: usize,
    /// The largest response accepted.
    pub max_response: usize,
}

/// One request as read off a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes, within the limit.
    Bytes(Vec<u8>),
    /// More than the limit arrived; only this much was read.
    Oversized {
        /// The limit it broke.
        limit: usize,
    },
}

/// Reads to the end, or stops one byte past `max`.
async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Result<Vec<u8>, usize>> {
    let mut bytes = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    Ok(if bytes.len() > max { Err(max) } else { Ok(bytes) })
}

async fn write_all<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.close().await
}

impl Codec for LimitedBytes {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        Ok(match read_limited(io, self.max_request).await? {
            Ok(bytes) => Frame::Bytes(bytes),
            Err(limit) => Frame::Oversized { limit },
        })
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        match read_limited(io, self.max_response).await? {
            // Every message encodes to at least one byte: nothing means the peer dropped
            // the request without answering.
            Ok(bytes) if bytes.is_empty() => {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))
            }
            Ok(bytes) => Ok(bytes),
            Err(limit) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answer exceeds {limit} bytes"),
            )),
        }
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Frame,
    ) -> io::Result<()> {
        match request {
            Frame::Bytes(bytes) => write_all(io, &bytes).await,
            Frame::Oversized { .. } => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "not a request to send"))
            }
        }
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()> {
        write_all(io, &response).await
    }
}
