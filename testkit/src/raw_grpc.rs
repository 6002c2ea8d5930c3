//! A gRPC call written by hand, for clients that misbehave on purpose:
//! the headers of a call and then whatever body bytes the caller sends.
//! Shared by the hostile-input tests (`tests/api/hostile.rs`) and their
//! benchmark (`examples/hostile_bench.rs`).

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};

/// Sends the headers of a unary call to `path` and, through the returned
/// sender, whatever body bytes the test wants; the call's gRPC status
/// arrives on the returned task.
pub fn raw_call(
    channel: &Channel,
    path: &str,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Result<Code, String>>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let frames = tokio_stream::StreamExt::map(ReceiverStream::new(rx), |b| {
        Ok::<_, tonic::Status>(http_body::Frame::data(b))
    });
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let channel = channel.clone();
    let done = tokio::spawn(async move {
        let resp = send(channel, req).await?;
        let code_of = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(Code::from_i32)
        };
        if let Some(code) = code_of(resp.headers()) {
            return Ok(code);
        }
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        collected
            .trailers()
            .and_then(code_of)
            .ok_or_else(|| "no grpc-status".to_string())
    });
    (tx, done)
}

/// The 5-byte gRPC message header announcing `len` payload bytes.
pub fn message_header(len: u32) -> Bytes {
    let mut h = vec![0u8];
    h.extend_from_slice(&len.to_be_bytes());
    Bytes::from(h)
}

/// A plain GET of `path` over the API's connection (as a browser fetches a
/// download link): the status, the headers, and the whole body, or the
/// error that ended it (a body the server broke off).
pub async fn plain_get(
    channel: &Channel,
    path: &str,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("https://localhost{path}"))
        .body(tonic::body::Body::empty())
        .unwrap();
    let resp = send(channel.clone(), req).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// Sends `req` over `channel` once it is ready.
async fn send(
    mut channel: Channel,
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, String> {
    use tower::{Service, ServiceExt};
    channel
        .ready()
        .await
        .map_err(|e| e.to_string())?
        .call(req)
        .await
        .map_err(|e| e.to_string())
}
