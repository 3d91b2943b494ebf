//! One HTTP/1.1 keep-alive connection from a bare hyper client, timed per
//! request: the load generator's and the hits' way in.

use std::net::SocketAddr;
use std::time::Instant;

use http_body_util::{BodyExt as _, Full};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// One answer, timed from the send to its whole body.
pub struct Answer {
    pub sent: Instant,
    pub nanos: u64,
    pub status: StatusCode,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { sender }
    }

    /// Sends one request once the connection can take it; `None` when the
    /// connection is closed.
    pub async fn try_send(&mut self, request: hyper::Request<Full<Bytes>>) -> Option<Answer> {
        self.sender.ready().await.ok()?;
        let sent = Instant::now();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Some(Answer {
            nanos: sent.elapsed().as_nanos() as u64,
            sent,
            status,
            body,
        })
    }

    /// Sends one request; `(time to the whole answer, status, body)`.
    pub async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> (u64, u16, Bytes) {
        let answer = self
            .try_send(request)
            .await
            .expect("the connection is open");
        (answer.nanos, answer.status.as_u16(), answer.body)
    }
}

/// Where pushes go, and the token they carry.
pub struct Target {
    pub addr: SocketAddr,
    pub token: String,
}

impl Target {
    /// The `authorization` header of every push.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// `POST /push` with `body`, as a Pub/Sub push subscription sends it.
pub fn push_request(authorization: &str, body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/push")
        .header("host", "pushroll")
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// What a load sends: Pub/Sub pushes with a Google token, or GitHub
/// registry webhooks signed with HMAC-SHA256 (issue 25's comparison).
#[derive(Clone)]
pub enum Route {
    /// `POST /push` with this `authorization` header.
    Push(String),
    /// `POST /webhooks/github`, signed with this secret.
    Github(String),
}

impl Route {
    pub fn request(&self, body: String) -> hyper::Request<Full<Bytes>> {
        match self {
            Route::Push(authorization) => push_request(authorization, body),
            Route::Github(secret) => {
                use hmac::Mac as _;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                    .expect("any key length");
                mac.update(body.as_bytes());
                let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                hyper::Request::post("/webhooks/github")
                    .header("host", "pushroll")
                    .header("x-github-event", "registry_package")
                    .header("x-hub-signature-256", signature)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            }
        }
    }
}

/// Whether `haystack` holds `needle`.
pub fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
