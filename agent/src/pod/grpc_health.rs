//! The `grpc` probe: one `grpc.health.v1.Health/Check` call over HTTP/2
//! cleartext (prior knowledge, as kubelet's probe: no TLS), written by hand
//! on the `h2` crate. The two messages have one field each, so their
//! protobuf encoding is a few bytes here rather than a code generator and
//! a gRPC framework (see `agent/Cargo.toml`).
//!
//! As kubelet: `SERVING` is a success; any other status, a gRPC error
//! (`grpc-status` other than 0, e.g. `NOT_FOUND` for an unknown service)
//! or a connection failure is a failure, with the reason as the output.

use std::net::SocketAddr;

use bytes::{Buf, Bytes};

/// At most this much of a response is read: a HealthCheckResponse is a
/// few bytes; a server sending more is not a health server.
const RESPONSE_LIMIT: usize = 64 << 10;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus` names.
fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("status {other}"),
    }
}

/// gRPC status code names (the ones a health server sends).
fn code_name(code: &str) -> String {
    let name = match code {
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "7" => "PermissionDenied",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "16" => "Unauthenticated",
        other => return format!("code {other}"),
    };
    name.to_string()
}

/// Calls Check on `addr` for `service`: `Ok` when it answers SERVING.
pub async fn check(addr: SocketAddr, service: &str) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("failed to connect service {addr}: {err}"))?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|err| format!("HTTP/2 handshake with {addr}: {err}"))?;
    // The connection is driven until this call returns (the task ends
    // with the last handle).
    let driver = tokio::spawn(connection);
    let result = call(client, addr, service).await;
    driver.abort();
    result
}

async fn call(
    client: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    service: &str,
) -> Result<String, String> {
    let h2_error = |err: h2::Error| format!("rpc error talking to {addr}: {err}");
    let mut client = client.ready().await.map_err(h2_error)?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            concat!("berth-probe/", env!("CARGO_PKG_VERSION")),
        )
        .body(())
        .map_err(|err| format!("building the request: {err}"))?;
    let (response, mut body) = client.send_request(request, false).map_err(h2_error)?;
    body.send_data(frame(&request_message(service)), true)
        .map_err(h2_error)?;
    let response = response.await.map_err(h2_error)?;
    let (head, mut stream) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(format!("rpc error: HTTP status {}", head.status));
    }
    // Trailers-only: an error without a message.
    if let Some(code) = head.headers.get("grpc-status") {
        grpc_status(code, head.headers.get("grpc-message"))?;
    }
    let mut data = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = stream.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > RESPONSE_LIMIT {
            return Err(format!("rpc error: response over {RESPONSE_LIMIT} bytes"));
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = stream.trailers().await.map_err(h2_error)?;
    if let Some(trailers) = &trailers
        && let Some(code) = trailers.get("grpc-status")
    {
        grpc_status(code, trailers.get("grpc-message"))?;
    }
    let message = unframe(&data)?;
    let status = response_status(message)?;
    if status == 1 {
        Ok(String::new())
    } else {
        Err(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(status)
        ))
    }
}

fn grpc_status(
    code: &http::HeaderValue,
    message: Option<&http::HeaderValue>,
) -> Result<(), String> {
    let code = code.to_str().unwrap_or("?");
    if code == "0" {
        return Ok(());
    }
    let message = message.and_then(|m| m.to_str().ok()).unwrap_or("");
    Err(format!(
        "rpc error: code = {} desc = {message}",
        code_name(code)
    ))
}

/// `HealthCheckRequest { string service = 1; }`.
fn request_message(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC message on the wire: uncompressed flag, length, bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    let len = u32::try_from(message.len()).expect("a health request is a few bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn unframe(data: &[u8]) -> Result<&[u8], String> {
    let mut header = data.get(..5).ok_or("rpc error: no response message")?;
    let compressed = header.get_u8();
    let len = usize::try_from(header.get_u32()).unwrap_or(usize::MAX);
    if compressed != 0 {
        return Err("rpc error: compressed response (no encoding was offered)".into());
    }
    data.get(5..5usize.saturating_add(len))
        .ok_or_else(|| "rpc error: truncated response message".into())
}

/// `HealthCheckResponse { ServingStatus status = 1; }`; unknown fields are
/// skipped, a missing status is UNKNOWN (proto3's default).
fn response_status(mut message: &[u8]) -> Result<u64, String> {
    let malformed = || "rpc error: malformed HealthCheckResponse".to_string();
    let mut status = 0;
    while !message.is_empty() {
        let key = get_varint(&mut message).ok_or_else(malformed)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut message).ok_or_else(malformed)?,
            (_, 0) => {
                get_varint(&mut message).ok_or_else(malformed)?;
            }
            (_, 1) => message = message.get(8..).ok_or_else(malformed)?,
            (_, 2) => {
                let len = get_varint(&mut message).ok_or_else(malformed)?;
                let len = usize::try_from(len).map_err(|_| malformed())?;
                message = message.get(len..).ok_or_else(malformed)?;
            }
            (_, 5) => message = message.get(4..).ok_or_else(malformed)?,
            _ => return Err(malformed()),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    let low = |v: u64| u8::try_from(v & 0x7f).expect("seven bits fit in a byte");
    while value >= 0x80 {
        out.push(low(value) | 0x80);
        value >>= 7;
    }
    out.push(low(value));
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_protobuf() {
        assert!(request_message("").is_empty(), "proto3 omits the default");
        assert_eq!(request_message("db"), b"\x0a\x02db");
        let long = "s".repeat(200);
        let encoded = request_message(&long);
        assert_eq!(&encoded[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(response_status(&[0x08, 0x01]), Ok(1));
        assert_eq!(response_status(&[]), Ok(0), "missing status is UNKNOWN");
        // An unknown string field before the status is skipped.
        assert_eq!(response_status(&[0x12, 0x01, b'x', 0x08, 0x02]), Ok(2));
        assert!(response_status(&[0x08]).is_err());
        let framed = frame(&[0x08, 0x01]);
        assert_eq!(unframe(&framed), Ok(&[0x08, 0x01][..]));
        assert!(unframe(&framed[..6]).is_err());
    }
}
