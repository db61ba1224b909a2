//! A minimal HTTP/1.0 client over a tokio `TcpStream`, enough for Consul's JSON API on loopback or the VLAN.
//!
//! HTTP/1.0 with one request per connection keeps the client tiny: the server closes the connection after the body,
//! so there is no chunked encoding and no connection reuse to get wrong. Consul's API needs nothing more, and
//! it avoids pulling a full HTTP stack (reqwest/hyper + TLS) into a binary that runs on a Raspberry Pi.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body accepted.
const MAX_RESPONSE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} http://{addr}{path}: {source}")]
    Io {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("{method} http://{addr}{path}: timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
    #[error("{method} http://{addr}{path}: malformed response: {reason}")]
    Malformed {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        reason: &'static str,
    },
    #[error("{method} http://{addr}{path}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        status: u16,
        body: String,
    },
}

/// A response with a 2xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Send one request and read the whole response. Non-2xx statuses are errors carrying the body Consul sent.
pub async fn request(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.unwrap_or_default();
        let mut message = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: cluster-lab\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(body);
        stream.write_all(&message).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(HttpError::Timeout {
                method,
                addr,
                path: path.into(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(HttpError::Io {
                method,
                addr,
                path: path.into(),
                source,
            })
        }
        Ok(Ok(raw)) => raw,
    };
    let malformed = |reason| HttpError::Malformed {
        method,
        addr,
        path: path.into(),
        reason,
    };
    if raw.len() > MAX_RESPONSE {
        return Err(malformed("response too large"));
    }
    let (status, body) = parse(&raw).map_err(malformed)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            method,
            addr,
            path: path.into(),
            status,
            body: String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(500)
                .collect(),
        });
    }
    Ok(Response {
        status,
        body: body.to_vec(),
    })
}

/// Split a complete HTTP/1.x response into status and body.
fn parse(raw: &[u8]) -> Result<(u16, &[u8]), &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not utf-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1 response");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad status code")?;
    let mut body = &raw[end + 4..];
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("bad header line")?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.trim().eq_ignore_ascii_case("identity")
        {
            return Err("chunked response to an HTTP/1.0 request");
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.trim().parse().map_err(|_| "bad content-length")?;
            body = body.get(..len).ok_or("body shorter than content-length")?;
        }
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let raw =
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse(raw), Ok((200, &b"[]"[..])));
        let no_len = b"HTTP/1.1 404 Not Found\r\n\r\nmissing";
        assert_eq!(parse(no_len), Ok((404, &b"missing"[..])));
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n"), Err("no end of headers"));
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nab"),
            Err("body shorter than content-length")
        );
        assert!(parse(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn round_trip_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.0 500 Internal Server Error\r\n\r\nboom")
                .await
                .unwrap();
            req
        });
        let err = request(addr, "PUT", "/v1/x", Some(b"{}"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("PUT http://{addr}/v1/x: HTTP 500: boom")
        );
        let req = server.await.unwrap();
        assert!(req.starts_with("PUT /v1/x HTTP/1.0\r\n"), "{req}");
        assert!(req.ends_with("Content-Length: 2\r\n\r\n{}"), "{req}");
    }
}
