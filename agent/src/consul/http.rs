//! Consul's JSON API over HTTP/1.1, through hyper's client (already linked through bollard): one request, the
//! whole body read (bounded), a non-2xx status turned into an error that carries what Consul said.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest response body accepted.
const MAX_RESPONSE: usize = 16 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} http://{addr}{path}: {}", chain(source.as_ref()))]
    Request {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        source: BoxError,
    },
    #[error("{method} http://{addr}{path}: timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        timeout: Duration,
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

/// An error and its causes, `a: b: c` (hyper's own text is only "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
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
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let failed = |source: BoxError| HttpError::Request {
        method,
        addr,
        path: path.into(),
        source,
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(hyper::header::USER_AGENT, "cluster-lab")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|e| failed(e.into()))?;
    // One connection per request, none kept idle: the agent talks to Consul a few times a minute.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let exchange = async {
        let response = client.request(request).await.map_err(BoxError::from)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await?
            .to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(HttpError::Timeout {
                method,
                addr,
                path: path.into(),
                timeout,
            })
        }
        Ok(result) => result.map_err(failed)?,
    };
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            method,
            addr,
            path: path.into(),
            status,
            body: String::from_utf8_lossy(&body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server: reads the request until its body arrived, answers `answer`, returns the request.
    async fn serve_once(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = vec![0u8; 4096];
            while !String::from_utf8_lossy(&req).contains("\r\n\r\n{}") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_server_error_carries_the_body() {
        let (addr, server) = serve_once(b"HTTP/1.0 500 Internal Server Error\r\n\r\nboom").await;
        let err = request(
            addr,
            "PUT",
            "/v1/x",
            Some(b"{}"),
            Some("0000-token"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("PUT http://{addr}/v1/x: HTTP 500: boom")
        );
        let req = server.await.unwrap().to_ascii_lowercase();
        assert!(req.starts_with("put /v1/x http/1.1\r\n"), "{req}");
        assert!(req.contains("content-length: 2\r\n"), "{req}");
        assert!(req.contains("content-type: application/json\r\n"), "{req}");
        assert!(req.contains("x-consul-token: 0000-token\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{}"), "{req}");
    }

    #[tokio::test]
    async fn a_json_answer_comes_back_whole() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n[\"node1\"]",
        )
        .await;
        let r = request(
            addr,
            "PUT",
            "/v1/y",
            Some(b"{}"),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[\"node1\"]"[..]));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_naming_the_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = request(
            addr,
            "GET",
            "/v1/status/leader",
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!("GET http://{addr}/v1/status/leader: ")),
            "{err}"
        );
        // The cause is in the message, not only hyper's "client error (Connect)".
        assert!(err.to_lowercase().contains("connection refused"), "{err}");
    }
}
