//! Request-response framing for Raclette's protocols: one message per stream, read to
//! the end with a hard size limit. The bytes are decoded by the application, so a
//! malformed request still gets an answer saying why.
//!
//! A request over the limit is not an I/O error here: libp2p's request-response drops
//! failed inbound reads without telling the application, so the sender would never be
//! logged or penalised. It arrives as [`Frame::Oversized`] instead, for the application
//! to refuse and count against the sender.
//!
//! A message cut short (the stream ended inside it) is an I/O error, not a malformed
//! message: a sender that drops its stream half-way, on a timeout or with its
//! connection, reads on this side as a stream that ended (yamux reads a reset as an
//! end), and nobody is to blame for that ([`is_cut_short`]).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use raclette_protocol::encoding::is_cut_short;

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

/// Reads to the end, or stops one byte past `max`. A stream that ends inside its message
/// (or before it) fails with `UnexpectedEof`.
async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Result<Vec<u8>, usize>> {
    let mut bytes = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.len() > max {
        return Ok(Err(max));
    }
    if is_cut_short(&bytes) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended inside a message, after {} bytes", bytes.len()),
        ));
    }
    Ok(Ok(bytes))
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

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use raclette_protocol::encoding::to_canonical_cbor;

    use super::*;

    fn codec() -> LimitedBytes {
        LimitedBytes { max_request: 1024, max_response: 1024 }
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/test/1")
    }

    /// Any message will do: the codec reads bytes, whatever they encode.
    fn message() -> Vec<u8> {
        let bytes = to_canonical_cbor(&raclette_protocol::NetworkParams::dev().genesis());
        assert!(bytes.len() <= codec().max_request, "fits the test's limit");
        bytes
    }

    #[tokio::test]
    async fn given_a_whole_message_then_it_reads_as_its_bytes_both_ways() {
        let bytes = message();
        let request = codec().read_request(&protocol(), &mut Cursor::new(bytes.clone())).await;
        assert_eq!(request.unwrap(), Frame::Bytes(bytes.clone()));
        let response = codec().read_response(&protocol(), &mut Cursor::new(bytes.clone())).await;
        assert_eq!(response.unwrap(), bytes);
    }

    /// A sender that drops its stream half-way (yamux reads that as the end) must not
    /// look like one that sent a malformed message: that cost honest peers bans, and
    /// nodes their tracker, when a loaded host made senders time out mid-write.
    #[tokio::test]
    async fn given_a_stream_that_ends_inside_the_message_then_it_is_an_io_error_not_a_message() {
        let bytes = message();
        for len in 0..bytes.len() {
            let cut = bytes[..len].to_vec();
            let request = codec().read_request(&protocol(), &mut Cursor::new(cut.clone())).await;
            let error = request.expect_err("a message cut short is no request");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {len}");
            let response = codec().read_response(&protocol(), &mut Cursor::new(cut)).await;
            let error = response.expect_err("a message cut short is no answer");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {len}");
        }
    }

    #[tokio::test]
    async fn given_whole_but_malformed_bytes_then_the_application_gets_them_to_refuse() {
        // A complete CBOR item of the wrong shape, and one with bytes after it: the
        // sender sent exactly this, so it is the sender's fault, which the application
        // decides.
        for bytes in [vec![0x01], [message(), vec![0x00]].concat()] {
            let request = codec().read_request(&protocol(), &mut Cursor::new(bytes.clone())).await;
            assert_eq!(request.unwrap(), Frame::Bytes(bytes));
        }
    }

    #[tokio::test]
    async fn given_more_than_the_limit_then_the_request_is_oversized() {
        let bytes = vec![0x40; 2048];
        let request = codec().read_request(&protocol(), &mut Cursor::new(bytes)).await;
        assert_eq!(request.unwrap(), Frame::Oversized { limit: 1024 });
    }
}
