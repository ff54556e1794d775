//! A small CIM-XML client for the tests and the benchmark: one keep-alive connection, plain or
//! TLS (trusting one certificate), requests written and responses read by the crate's codec.

use crate::wbem::xml::{self, CimType, ObjectPath, Param, ParamValue, Request, Response, Value};
use base64::Engine as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An HTTP answer: status code, headers (names in lower case) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct CimClient {
    stream: Stream,
    auth: String,
    next_id: u64,
}

impl CimClient {
    /// Plain HTTP to `addr`.
    pub fn plain(addr: SocketAddr, user: &str, password: &str) -> io::Result<CimClient> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(CimClient::with(Stream::Plain(s), user, password))
    }

    /// HTTPS to `addr`, trusting only the PEM certificate `cert` (for 127.0.0.1).
    pub fn tls(
        addr: SocketAddr,
        cert: &std::path::Path,
        user: &str,
        password: &str,
    ) -> io::Result<CimClient> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).map_err(io::Error::other)? {
            roots
                .add(c.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::from(addr.ip());
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(io::Error::other)?;
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(CimClient::with(
            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, s))),
            user,
            password,
        ))
    }

    fn with(stream: Stream, user: &str, password: &str) -> CimClient {
        CimClient {
            stream,
            auth: base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
            next_id: 1,
        }
    }

    /// POSTs `body` with the CIM headers; `method` goes into CIMMethod.
    pub fn post(&mut self, method: &str, body: &[u8]) -> io::Result<HttpAnswer> {
        let head = format!(
            "POST /cimom HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {}\r\n\
             CIMOperation: MethodCall\r\nCIMMethod: {method}\r\n\
             Content-Type: application/xml; charset=\"utf-8\"\r\nContent-Length: {}\r\n\r\n",
            self.auth,
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> io::Result<HttpAnswer> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before an answer",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        r.parse(&buf[..head_end]).map_err(io::Error::other)?;
        let status = r.code.unwrap_or(0);
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a body",
                ));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok(HttpAnswer {
            status,
            headers,
            body,
        })
    }

    /// Sends `call` with `params` and reads the CIM response.
    pub fn call(&mut self, call: xml::Call, params: Vec<Param>) -> io::Result<Response> {
        let req = Request {
            message_id: self.next_id.to_string(),
            call,
            params,
        };
        self.next_id += 1;
        let a = self.post(req.call.name(), xml::write_request(&req).as_bytes())?;
        if a.status != 200 {
            return Err(io::Error::other(format!(
                "HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )));
        }
        let text = String::from_utf8(a.body).map_err(io::Error::other)?;
        let (id, r) = xml::parse_response(&text).map_err(io::Error::other)?;
        if id != req.message_id {
            return Err(io::Error::other(format!(
                "answer to message {id}, not {}",
                req.message_id
            )));
        }
        Ok(r)
    }

    /// An intrinsic operation on `namespace`.
    pub fn intrinsic(
        &mut self,
        name: &str,
        namespace: &str,
        params: Vec<Param>,
    ) -> io::Result<Response> {
        self.call(
            xml::Call::Intrinsic {
                name: name.into(),
                namespace: namespace.into(),
            },
            params,
        )
    }
}

/// A parameter of a request: a class name.
pub fn class_name(name: &str, class: &str) -> Param {
    Param {
        name: name.into(),
        ty: None,
        value: ParamValue::ClassName(class.into()),
    }
}

/// A parameter of a method call: a reference.
pub fn reference(name: &str, path: ObjectPath) -> Param {
    Param {
        name: name.into(),
        ty: Some(CimType::Reference),
        value: ParamValue::Value(Value::Reference(path)),
    }
}

/// A parameter of a method call: a uint16.
pub fn uint16(name: &str, v: u16) -> Param {
    Param {
        name: name.into(),
        ty: Some(CimType::Uint16),
        value: ParamValue::Value(Value::Scalar(v.to_string())),
    }
}
