//! go-grpc-prometheus's server metrics, as etcd 3.4 exposes them, for every gRPC call the
//! client port serves: `grpc_server_started_total` when the call arrives,
//! `grpc_server_handled_total` (with its status code) and `grpc_server_handling_seconds`
//! when it ends, `grpc_server_msg_received_total`/`_sent_total` per message, and etcd's
//! `etcd_network_client_grpc_received_bytes_total`/`_sent_bytes_total` (the messages'
//! sizes, as etcd's codec counts them). Counted by wrapping the request and response bodies
//! and reading gRPC's 5-byte message prefixes as the bytes pass: no lock, no copy, no
//! decoding.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::Grpc;
use crate::raft::Shared;

/// gRPC's code numbers used here.
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One call being served: counts it as handled, with the code it ended with, when dropped
/// (a call dropped before it ended was cancelled, as go-grpc-prometheus then sees).
pub struct Call {
    shared: Arc<Shared>,
    method: usize,
    started: crate::rt::Instant,
    code: Option<usize>,
}

impl Call {
    /// A call of the method `path` names, counted as started; `None` for a method detcd
    /// does not serve (not counted, as go-grpc-prometheus never sees one).
    pub fn start(shared: &Arc<Shared>, path: &str) -> Option<Call> {
        let method = Grpc::method(path)?;
        shared.counters.grpc.started(method);
        Some(Call {
            shared: Arc::clone(shared),
            method,
            started: shared.clock.now(),
            code: None,
        })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let took = self.shared.clock.now() - self.started;
        // etcd's Lock and Election servers return the context's error to a client that went
        // away, which gRPC reports as Unknown; etcd's own services map it to Canceled.
        let dropped = if self.method < crate::metrics::GRPC_REGISTERED {
            CANCELED
        } else {
            UNKNOWN
        };
        let code = self.code.unwrap_or(dropped);
        self.shared.counters.grpc.handled(self.method, code, took);
    }
}

/// The code a `grpc-status` header or trailer carries.
fn status_of(h: &http::HeaderMap) -> Option<usize> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Finds the messages in a gRPC body as its bytes pass (1 byte flag, 4 bytes big-endian
/// length, the message).
#[derive(Default)]
struct Messages {
    prefix: [u8; 5],
    have: usize,
    left: u64,
}

impl Messages {
    /// Feed bytes; `found` gets the length of each message whose prefix completes.
    fn feed(&mut self, mut data: &[u8], mut found: impl FnMut(u64)) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = (self.left.min(data.len() as u64)) as usize;
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                found(u64::from(len));
                self.left = u64::from(len);
                self.have = 0;
            }
        }
    }
}

/// Which way a counted body flows.
enum Side {
    /// A request body: messages received.
    Request { shared: Arc<Shared>, method: usize },
    /// A response body: messages sent; ends the call.
    Response(Option<Call>),
}

/// A body whose gRPC messages are counted (a pass-through when the method is not counted).
pub struct Counted<B> {
    inner: B,
    messages: Messages,
    side: Option<Side>,
}

impl<B> Counted<B> {
    /// The request body of `call`.
    pub fn request(inner: B, call: Option<&Call>) -> Counted<B> {
        Counted {
            inner,
            messages: Messages::default(),
            side: call.map(|c| Side::Request {
                shared: Arc::clone(&c.shared),
                method: c.method,
            }),
        }
    }

    /// The response body of `call`, which ends when the body does (or is dropped). A
    /// trailers-only response (an error) carries its status in the headers.
    pub fn response(inner: B, headers: &http::HeaderMap, call: Option<Call>) -> Counted<B> {
        let call = call.map(|mut c| {
            c.code = status_of(headers);
            c
        });
        Counted {
            inner,
            messages: Messages::default(),
            side: Some(Side::Response(call)),
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match (&polled, &mut this.side) {
            (Poll::Ready(Some(Ok(f))), Some(Side::Request { shared, method })) => {
                if let Some(d) = f.data_ref() {
                    let grpc = &shared.counters.grpc;
                    this.messages
                        .feed(d.chunk(), |len| grpc.received(*method, len));
                }
            }
            (Poll::Ready(Some(Ok(f))), Some(Side::Response(Some(call)))) => {
                if let Some(d) = f.data_ref() {
                    let (grpc, method) = (&call.shared.counters.grpc, call.method);
                    this.messages.feed(d.chunk(), |len| grpc.sent(method, len));
                } else if let Some(code) = f.trailers_ref().and_then(status_of) {
                    call.code = Some(code);
                }
            }
            (Poll::Ready(None), Some(Side::Response(call))) => {
                if let Some(mut c) = call.take() {
                    c.code.get_or_insert(UNKNOWN);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Messages;

    #[test]
    fn messages_are_found_across_chunk_boundaries() {
        // Two messages (3 bytes and 0 bytes) then a 300-byte one, cut at awkward places.
        let mut wire = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 44];
        wire.extend(std::iter::repeat_n(7u8, 300));
        for cut in [1, 2, 4, 5, 6, 9, 13, 17, 100] {
            let mut m = Messages::default();
            let mut found = Vec::new();
            for chunk in wire.chunks(cut) {
                m.feed(chunk, |len| found.push(len));
            }
            assert_eq!(found, vec![3, 0, 300], "chunks of {cut}");
        }
    }
}
