//! The CIM-XML server's HTTP side over the mock service: keep-alive, authentication, and every
//! limit that bounds what a client may cost.

use lio_replica::testing::cim::{class_name, CimClient};
use lio_replica::testing::Mock;
use lio_replica::wbem::http::{Limits, Listener, Server};
use lio_replica::wbem::provider::{Provider, NS_STORAGE};
use lio_replica::wbem::users::{self, Users};
use lio_replica::wbem::xml::{IReturn, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    _dir: tempfile::TempDir,
    users: std::path::PathBuf,
    addr: SocketAddr,
    server: Option<Server>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

fn limits() -> Limits {
    Limits {
        connections: 3,
        head_bytes: 2048,
        body_bytes: 64 * 1024,
        head_time: Duration::from_millis(500),
        body_time: Duration::from_millis(500),
        idle: Duration::from_secs(5),
        login_delay: Duration::from_millis(300),
    }
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("cim-users");
    users::add(&users, "admin", "pw").unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let provider = Provider::new(Arc::new(Mock::default()), "host1");
    let server = Server::start(
        vec![Listener { socket, tls: None }],
        provider,
        Users::new(users.clone()),
        limits(),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        users,
        addr,
        server: Some(server),
    }
}

fn volumes(c: &mut CimClient) -> usize {
    match c
        .intrinsic(
            "EnumerateInstanceNames",
            NS_STORAGE,
            vec![class_name("ClassName", "CIM_StorageVolume")],
        )
        .unwrap()
    {
        Response::Intrinsic {
            result: Ok(IReturn::InstanceNames(v)),
            ..
        } => v.len(),
        other => panic!("{other:?}"),
    }
}

/// Sends raw bytes on a new connection and reads until the server closes it or 5 s pass.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /cimom HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic YWRtaW46cHc=\r\n{extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn one_connection_serves_many_requests() {
    let f = start();
    let mut c = CimClient::plain(f.addr, "admin", "pw").unwrap();
    for _ in 0..20 {
        assert_eq!(volumes(&mut c), 1);
    }
}

#[test]
fn wrong_or_missing_credentials_get_401_and_a_wrong_password_waits() {
    let f = start();
    let t0 = Instant::now();
    let mut c = CimClient::plain(f.addr, "admin", "nope").unwrap();
    let a = c.post("EnumerateInstanceNames", b"<CIM/>").unwrap();
    assert_eq!(a.status, 401);
    assert!(t0.elapsed() >= limits().login_delay, "{:?}", t0.elapsed());
    assert_eq!(
        a.header("www-authenticate"),
        Some("Basic realm=\"lio-replica\"")
    );
    assert_eq!(a.header("connection"), Some("close"));
    let r = raw(
        f.addr,
        b"POST /cimom HTTP/1.1\r\nCIMOperation: MethodCall\r\nContent-Length: 6\r\n\r\n<CIM/>",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // an accounts file others can read: nobody gets in, not even with the right password
    std::fs::set_permissions(&f.users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = CimClient::plain(f.addr, "admin", "pw").unwrap();
    assert_eq!(
        c.post("EnumerateInstanceNames", b"<CIM/>").unwrap().status,
        401
    );
}

#[test]
fn a_removed_account_is_refused_on_a_live_connection() {
    let f = start();
    let mut c = CimClient::plain(f.addr, "admin", "pw").unwrap();
    assert_eq!(volumes(&mut c), 1);
    users::add(&f.users, "other", "x").unwrap();
    users::remove(&f.users, "admin").unwrap();
    let a = c.post("EnumerateInstanceNames", b"<CIM/>").unwrap();
    assert_eq!(a.status, 401);
}

#[test]
fn bad_requests_get_the_http_status_and_cim_error_header() {
    let f = start();
    let big = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(Vec<u8>, &str, Option<&str>)> = vec![
        (request("CIMOperation: MethodCall\r\n", &big), "413", None),
        (
            format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(4096)).into_bytes(),
            "431",
            None,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "405", None),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "411",
            None,
        ),
        (request("", "<CIM/>"), "400", Some("unsupported-operation")),
        (
            request("CIMOperation: MethodCall\r\n", "<CIM><MESSAGE"),
            "400",
            Some("request-not-well-formed"),
        ),
        (
            request("CIMOperation: MethodCall\r\nCIMMethod: GetClass\r\n",
                "<CIM><MESSAGE ID=\"1\"><SIMPLEREQ><IMETHODCALL NAME=\"GetInstance\"><LOCALNAMESPACEPATH><NAMESPACE NAME=\"x\"/></LOCALNAMESPACEPATH></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"),
            "400",
            Some("header-mismatch"),
        ),
        (
            request("CIMOperation: MethodCall\r\n", "<CIM><MESSAGE ID=\"1\"><MULTIREQ/></MESSAGE></CIM>"),
            "501",
            Some("multiple-requests-unsupported"),
        ),
        (b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(), "400", None),
    ];
    for (bytes, status, cim_error) in cases {
        let r = raw(f.addr, &bytes);
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
        if let Some(e) = cim_error {
            assert!(r.contains(&format!("CIMError: {e}\r\n")), "{r}");
        }
    }
    let mut c = CimClient::plain(f.addr, "admin", "pw").unwrap();
    assert_eq!(volumes(&mut c), 1, "the server still serves");
}

#[test]
fn slow_clients_are_cut_off() {
    let f = start();
    // a head that never ends
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /cimom HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "closed after the head's time: {:?}",
        t0.elapsed()
    );
    // a body that never comes
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /cimom HTTP/1.1\r\nAuthorization: Basic YWRtaW46cHc=\r\nCIMOperation: MethodCall\r\nContent-Length: 100\r\n\r\n<CIM>").unwrap();
    let _ = s.read_to_end(&mut out);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "closed after the body's time: {:?}",
        t0.elapsed()
    );
}

#[test]
fn connections_beyond_the_limit_are_refused_and_the_slots_come_back() {
    let f = start();
    let mut held: Vec<CimClient> = (0..3)
        .map(|_| CimClient::plain(f.addr, "admin", "pw").unwrap())
        .collect();
    for c in &mut held {
        assert_eq!(volumes(c), 1);
    }
    let r = raw(f.addr, b"");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    held.pop();
    // the slot is free once the server sees the connection closed
    let t0 = Instant::now();
    loop {
        let mut c = CimClient::plain(f.addr, "admin", "pw").unwrap();
        match c.post("EnumerateInstanceNames", b"<CIM/>") {
            Ok(a) if a.status == 400 => break,
            _ if t0.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("{other:?}"),
        }
    }
}
