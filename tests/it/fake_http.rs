//! A tiny HTTP/1.1 server for tests (one thread per connection, `Connection: close`)
//! standing in for credential endpoints, IMDS and STS, plus credential documents.
//! It listens on 127.0.0.1 only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bedrock_keyd::clock::time::rfc3339;

// ---------------------------------------------------------------------------------
// A tiny HTTP/1.1 server: one thread per connection, `Connection: close`.

#[derive(Clone)]
pub enum Reply {
    Json(String),
    Text(String),
    /// An IMDSv2 session token, with the TTL header the SDK insists on.
    ImdsToken(String),
    Status(u16),
    /// A status with an XML body (an AWS query-protocol error).
    Xml(u16, String),
    /// 200 with a body that is not a credentials document.
    Garbage,
    /// Accept, read the request, never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct FakeServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    handler: Arc<Mutex<Handler>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Arc::new(handler)));
        let (reqs, hand) = (requests.clone(), handler.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reqs, hand) = (reqs.clone(), hand.clone());
                std::thread::spawn(move || serve(stream, &reqs, &hand));
            }
        });
        Self {
            port,
            requests,
            handler,
        }
    }

    pub fn set(&self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Mutex<Handler>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let request = Request {
        method,
        path,
        headers,
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    requests.lock().unwrap().push(request.clone());
    let handler = handler.lock().unwrap().clone();
    let mut extra = "";
    let (status, content_type, body) = match handler(&request) {
        Reply::Json(b) => (200, "application/json", b),
        Reply::Text(b) => (200, "text/plain", b),
        Reply::ImdsToken(b) => {
            extra = "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n";
            (200, "text/plain", b)
        }
        Reply::Status(s) => (s, "text/plain", "internal error".to_owned()),
        Reply::Xml(s, b) => (s, "text/xml", b),
        Reply::Garbage => (200, "application/json", "<html>not json".to_owned()),
        Reply::Hang => {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// GET over plain HTTP/1.0 (no client crate needed for moto's state API).
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `now + secs`, whole seconds, as a credential document shows it.
pub fn in_secs(secs: u64) -> (SystemTime, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = UNIX_EPOCH + Duration::from_secs(now + secs);
    (t, rfc3339(t))
}

pub fn creds_json(id: &str, secret: &str, token: &str, expiration: &str) -> String {
    crate::leaks::register_secret(secret);
    crate::leaks::register_secret(token);
    serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": id,
        "SecretAccessKey": secret,
        "Token": token,
        "Expiration": expiration,
        "LastUpdated": rfc3339(SystemTime::now()),
    })
    .to_string()
}
