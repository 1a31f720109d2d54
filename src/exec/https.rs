//! One GET over a stream, with or without TLS: the one exchange the gates' live
//! handshakes ([`crate::apply`]'s `live`), the prober's and a component's health check
//! make. A [`Handshake`] is a client as it holds its credentials (its roots, or none when
//! it does not verify its server; its certificate and key, when it has them): it
//! connects, completes the handshake, sends `GET path`, and needs an HTTP answer: under
//! TLS 1.3 a server that rejects the client certificate says so only at the first read,
//! and one that takes the connection but not the certificate answers 401.

use crate::pki::tls::{Identity, TlsError, client_config};
use miette::Diagnostic;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The most of an answer that is read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a GET got no usable answer.
#[derive(Debug, Error, Diagnostic)]
pub enum HttpsError {
    /// Nothing answered at the address.
    #[error("cannot connect to {address}: {reason}")]
    #[diagnostic(
        code(trustform::https::connect),
        help(
            "check that the component runs and listens there, and that the client's node reaches the address (a firewall, a wrong --advertise-address)"
        )
    )]
    Connect {
        /// `host:port`.
        address: String,
        /// What the network said.
        reason: String,
    },
    /// The TLS handshake failed: one side does not trust the other.
    #[error("TLS handshake: {0}")]
    #[diagnostic(
        code(trustform::https::handshake),
        help(
            "the client's trust bundle does not hold the CA that issued the server's certificate, or the certificate does not name the address (the gate's other lines name the bundle or leaf)"
        )
    )]
    Handshake(String),
    /// The connection ended before an answer (under TLS 1.3: the server refused the
    /// client certificate).
    #[error("the server closed the connection without an answer{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    #[diagnostic(
        code(trustform::https::no_answer),
        help(
            "under TLS 1.3 a server refuses a client certificate after the handshake: its client CA bundle does not hold the CA that issued the client's certificate"
        )
    )]
    NoAnswer(Option<String>),
    /// Something answered that is not HTTP.
    #[error("not an HTTP answer")]
    #[diagnostic(
        code(trustform::https::not_http),
        help("another program listens at that port: check the component's port flags")
    )]
    NotHttp,
    /// The server took the connection but not the client certificate.
    #[error("401 Unauthorized: the server does not accept the client certificate")]
    #[diagnostic(
        code(trustform::https::unauthorized),
        help(
            "the server's --client-ca-file does not hold the CA that issued the client certificate, or the certificate has expired"
        )
    )]
    Unauthorized,
    /// The server took the connection but not the service-account token.
    #[error("401 Unauthorized: the server does not accept the service-account token")]
    #[diagnostic(
        code(trustform::https::token_rejected),
        help(
            "no key of the API server's --service-account-key-file verifies the token (its signing key was dropped before every pod's token was re-issued), or the token has expired"
        )
    )]
    TokenRejected,
    /// No answer within the time allowed.
    #[error("no answer in {0}")]
    #[diagnostic(
        code(trustform::https::timeout),
        help(
            "the server or the path to it hangs: check that the component runs and is not overloaded"
        )
    )]
    TimedOut(String),
    /// The client's own credentials cannot be used.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Credentials(TlsError),
}

/// An HTTP answer: its status and body (a chunked body joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// A bearer token a client presents (a pod's service-account token): a credential,
/// never printed (its `Debug` says only that there is one).
#[derive(Clone)]
pub struct Bearer(pub String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(…)")
    }
}

/// A client's side of a TLS connection.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The CA bundle it verifies the server with (PEM); `None`: it does not verify it.
    pub roots: Option<Vec<u8>>,
    /// Its certificate and key, when it presents one.
    pub identity: Option<Identity>,
    /// The name it verifies the server's certificate against.
    pub name: ServerName<'static>,
    /// The `Host` it asks (the address dialed).
    pub host: String,
    /// The port dialed.
    pub port: u16,
    /// What it GETs.
    pub path: String,
    /// The token it presents (`Authorization: Bearer`), if any.
    pub bearer: Option<Bearer>,
}

impl Handshake {
    /// Handshake over `stream` and GET; `Err` when the handshake fails, no HTTP answer
    /// comes, or the server answers 401 to a client certificate.
    pub fn over(&self, stream: impl Read + Write) -> Result<Answer, HttpsError> {
        let config = client_config(self.roots.as_deref(), self.identity.clone())
            .map_err(HttpsError::Credentials)?;
        let conn = rustls::ClientConnection::new(Arc::new(config), self.name.clone())
            .map_err(|e| HttpsError::Handshake(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| HttpsError::Handshake(e.to_string()))?;
        }
        let bearer = self.bearer.as_ref().map(|b| b.0.as_str());
        let answer = get_with(tls, &self.host, self.port, &self.path, bearer)?;
        if answer.status == 401 && bearer.is_some() {
            return Err(HttpsError::TokenRejected);
        }
        if answer.status == 401 && self.identity.is_some() {
            return Err(HttpsError::Unauthorized);
        }
        Ok(answer)
    }
}

/// GET `path` over `stream` (plain, or a TLS stream), reading the whole answer.
pub fn get(s: impl Read + Write, host: &str, port: u16, path: &str) -> Result<Answer, HttpsError> {
    get_with(s, host, port, path, None)
}

/// `host:port`, an IPv6 address in brackets (`[::1]:2379`), as a URL or `Host` says it.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// [`get`], presenting `bearer` as `Authorization: Bearer` when there is one.
fn get_with(
    mut s: impl Read + Write,
    host: &str,
    port: u16,
    path: &str,
    bearer: Option<&str>,
) -> Result<Answer, HttpsError> {
    let host = authority(host, port);
    let authorization = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trustform\r\nAccept: */*\r\n{authorization}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| HttpsError::NoAnswer(Some(e.to_string())))?;
    // Read until the answer is complete (its Content-Length, or the last chunk), not
    // until the server closes: etcd's peer port keeps a `Connection: close` connection
    // open for seconds after answering, and Go's HTTP client does not wait for that.
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let mut error = None;
    while (answer.len() as u64) < MAX_ANSWER && !complete(&answer) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    // A server that closes without close_notify still gave its answer.
    if answer.is_empty() {
        return Err(HttpsError::NoAnswer(error));
    }
    parse(&answer)
}

/// Whether `answer` holds a whole HTTP/1.1 answer: its head, and a body of its
/// `Content-Length` or ending with the last chunk (else only the close ends it).
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let body = &answer[end + 4..];
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "content-length" => {
                return value.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
            }
            "transfer-encoding" if value.contains("chunked") => {
                return body.starts_with(b"0\r\n\r\n")
                    || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n");
            }
            _ => {}
        }
    }
    false
}

/// Run `f` (a connection and its exchange) on its own thread, giving up after `timeout`:
/// a stream through a transport (`ssh -W`) has no timeout of its own.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, HttpsError> + Send + 'static,
) -> Result<T, HttpsError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(HttpsError::TimedOut(
            humantime::format_duration(timeout).to_string(),
        ))
    })
}

/// The status line and body of an HTTP/1.1 answer (chunked bodies joined).
pub(crate) fn parse(answer: &[u8]) -> Result<Answer, HttpsError> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(HttpsError::NotHttp)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { unchunk(body) } else { body.into() };
    Ok(Answer { status, body })
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that answers `answer` to whatever is written.
    struct Canned {
        answer: std::io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.answer.read(buf)
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn canned(answer: &str) -> Canned {
        Canned {
            answer: std::io::Cursor::new(answer.as_bytes().to_vec()),
            sent: vec![],
        }
    }

    #[test]
    fn answers_are_read_as_http() {
        let a = get(
            canned("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            "::1",
            6443,
            "/readyz",
        )
        .unwrap();
        assert_eq!(
            a,
            Answer {
                status: 200,
                body: "ok".into()
            }
        );
        let a = get(
            canned("HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[-]e\r\n5\r\ntcd x\r\n0\r\n\r\n"),
            "h",
            1,
            "/",
        )
        .unwrap();
        assert_eq!(
            a,
            Answer {
                status: 500,
                body: "[-]etcd x".into()
            }
        );
        assert!(matches!(
            get(canned(""), "h", 1, "/"),
            Err(HttpsError::NoAnswer(None))
        ));
        assert!(matches!(
            get(canned("ok\n"), "h", 1, "/"),
            Err(HttpsError::NotHttp)
        ));
    }

    /// A server that answers, then keeps the connection open (etcd's peer port does, for
    /// seconds): reading past the answer would hang.
    struct Lingering(Canned);

    impl Read for Lingering {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            assert!(n > 0, "read past a complete answer: it would hang");
            Ok(n)
        }
    }

    impl Write for Lingering {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_complete_answer_is_not_read_past() {
        let a = get(
            Lingering(canned(
                "HTTP/1.1 200 OK\r\nContent-Length: 45\r\n\r\n{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}",
            )),
            "h",
            2380,
            "/version",
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.contains("3.4.23"));
        let a = get(
            Lingering(canned(
                "HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno \r\n6\r\nleader\r\n0\r\n\r\n",
            )),
            "h",
            2381,
            "/health",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_str()), (503, "no leader"));
        assert!(complete(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nuntil the close"));
    }

    #[test]
    fn the_request_names_its_host_and_path() {
        let mut s = canned("HTTP/1.1 204 No Content\r\n\r\n");
        get(&mut s, "::1", 10250, "/healthz").unwrap();
        let sent = String::from_utf8(s.sent).unwrap();
        assert!(
            sent.starts_with("GET /healthz HTTP/1.1\r\nHost: [::1]:10250\r\n"),
            "{sent}"
        );
        assert!(sent.ends_with("\r\n\r\n"), "{sent}");
    }

    /// A TLS 1.3 server that requires client certificates from `client_ca`, answers one
    /// connection with `answer` and ends.
    fn server(
        identity: Identity,
        client_ca: &str,
        answer: &'static [u8],
    ) -> (u16, std::thread::JoinHandle<()>) {
        use crate::pki::tls::{provider, roots};
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(client_ca.as_bytes()).unwrap(),
            provider(),
        )
        .build()
        .unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(identity.chain, identity.key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(answer);
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        (port, t)
    }

    #[test]
    fn the_handshake_judges_both_sides_as_a_real_server_does() {
        use crate::pki::issue::{generate_key, issue_leaf, new_ca};
        use crate::pki::{KeyAlgorithm, LeafSpec};
        let alg = KeyAlgorithm::EcdsaP256;
        let ca = new_ca("cluster", alg, 1).unwrap();
        let other = new_ca("other", alg, 1).unwrap();
        let leaf = |spec: LeafSpec, by: &crate::pki::issue::CaMaterial| {
            let key = generate_key(alg).unwrap();
            let cert = issue_leaf(&spec, &key, by).unwrap();
            Identity::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes()).unwrap()
        };
        let serving = || leaf(LeafSpec::server("api", vec!["IP:127.0.0.1".into()]), &ca);
        let client = |by| leaf(LeafSpec::client("admin", &["system:masters"]), by);
        let handshake = |port, roots: &str, identity| Handshake {
            roots: Some(roots.as_bytes().to_vec()),
            identity: Some(identity),
            name: ServerName::try_from("127.0.0.1").unwrap(),
            host: "127.0.0.1".into(),
            port,
            path: "/version".into(),
            bearer: None,
        };
        let dial = |port| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Both sides trust each other: the answer comes.
        let (port, t) = server(
            serving(),
            &ca.cert_pem,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        let a = handshake(port, &ca.cert_pem, client(&ca)).over(dial(port));
        t.join().unwrap();
        assert_eq!(a.unwrap().status, 200);
        // The client does not trust the server's CA: the handshake fails.
        let (port, t) = server(serving(), &ca.cert_pem, b"");
        let e = handshake(port, &other.cert_pem, client(&ca)).over(dial(port));
        t.join().unwrap();
        assert!(matches!(e, Err(HttpsError::Handshake(_))), "{e:?}");
        // The server does not trust the client's CA: under TLS 1.3 it says so at the first read.
        let (port, t) = server(serving(), &ca.cert_pem, b"");
        let e = handshake(port, &ca.cert_pem, client(&other)).over(dial(port));
        t.join().unwrap();
        assert!(matches!(e, Err(HttpsError::NoAnswer(Some(_)))), "{e:?}");
        // A server that takes the connection but not the certificate: 401.
        let (port, t) = server(
            serving(),
            &ca.cert_pem,
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        );
        let e = handshake(port, &ca.cert_pem, client(&ca)).over(dial(port));
        t.join().unwrap();
        assert!(matches!(e, Err(HttpsError::Unauthorized)), "{e:?}");
    }

    #[test]
    fn a_hung_exchange_times_out() {
        let r: Result<(), _> = within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        assert!(matches!(r, Err(HttpsError::TimedOut(_))), "{r:?}");
    }
}
