//! A small HTTP/1.1 server on hyper with one ability frameworks lack: a handler may answer by
//! resetting the connection, the way a lost response looks to a client.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub struct Request {
    pub method: Method,
    /// The path exactly as sent, percent-encoding intact.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }
}

pub enum Outcome {
    Reply(Response),
    /// Headers now, then the body as it comes (a watch): each chunk sent as soon as it is received;
    /// the body ends when the sender is dropped.
    Stream(Response, tokio::sync::mpsc::Receiver<Bytes>),
    /// Close the connection with a TCP reset and no answer.
    Reset,
}

/// A response body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

impl From<Response> for Outcome {
    fn from(r: Response) -> Outcome {
        Outcome::Reply(r)
    }
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// Serves `listener` (over TLS when given an acceptor) until `shutdown` turns true; each connection
/// on its own task.
pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(connection(stream, peer, handler, tls.clone()));
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    handler: Handler,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the same socket lets us turn the close into a reset after hyper lets go.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(keeper) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let kill = Arc::new(Notify::new());
    let kill_in_service = kill.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let handler = handler.clone();
        let kill = kill_in_service.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let request = Request {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: parse_query(parts.uri.query().unwrap_or("")),
                headers: parts.headers,
                body,
                peer: Some(peer),
            };
            match handler(request).await {
                Outcome::Reply(r) => {
                    let body = Full::new(Bytes::from(r.body.clone())).boxed();
                    Ok::<_, std::convert::Infallible>(to_hyper(r, body))
                }
                Outcome::Stream(r, rx) => {
                    let body = ChannelBody(rx).boxed();
                    Ok(to_hyper(r, body))
                }
                Outcome::Reset => {
                    kill.notify_one();
                    std::future::pending().await
                }
            }
        }
    });
    let served = async {
        match tls {
            Some(acceptor) => {
                if let Ok(tls_stream) = acceptor.accept(stream).await {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls_stream), service)
                        .await;
                }
            }
            None => {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        }
    };
    tokio::select! {
        _ = served => {}
        _ = kill.notified() => {
            let _ = socket2::SockRef::from(&keeper).set_linger(Some(Duration::ZERO));
        }
    }
    drop(keeper);
}

fn to_hyper(r: Response, body: Body) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = r.status;
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// `application/x-www-form-urlencoded` pairs: `+` is a space, `%XX` a byte.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

pub fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms_and_percent_escapes() {
        assert_eq!(form_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(percent_decode("a+b%2"), "a+b%2");
        let q = parse_query("api-version=2024-03-02&scope=https%3A%2F%2Fx%2F.default&flag");
        assert_eq!(q[1], ("scope".into(), "https://x/.default".into()));
        assert_eq!(q[2], ("flag".into(), String::new()));
    }
}
