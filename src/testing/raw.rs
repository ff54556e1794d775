//! A raw connection to the API socket: whole lines in, parsed lines out.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A raw connection: whole lines in, parsed lines out.
pub struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// how long a read waits for an answer
    bound: Duration,
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw {
            stream,
            reader,
            bound: Duration::from_secs(10),
        }
    }

    /// A connection whose reads and writes each give up after `bound`; errors are returned,
    /// for callers that judge them (see [`Raw::send_line`] and [`Raw::answer`]).
    pub fn connect_within(path: &Path, bound: Duration) -> std::io::Result<Raw> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(bound))?;
        stream.set_write_timeout(Some(bound))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Raw {
            stream,
            reader,
            bound,
        })
    }

    /// `line` and a newline, in one write.
    pub fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut b = line.to_vec();
        b.push(b'\n');
        self.stream.write_all(&b)
    }

    /// The next answer line, or why there is none: the server closed the connection, the line
    /// is not JSON, or nothing came within the bound.
    pub fn answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("not JSON ({e}): {line:?}")),
            Err(e) => Err(format!("no answer within {:?}: {e}", self.bound)),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next answer line, or `None` at end of stream.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).unwrap() {
            0 => None,
            _ => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv().expect("an answer")
    }

    /// As `call`, but `None` when the server closed the connection first (it may answer a
    /// refused connection and close it before the request is even written).
    pub fn try_call(&mut self, line: &str) -> Option<Value> {
        let sent = self
            .stream
            .write_all(line.as_bytes())
            .and_then(|_| self.stream.write_all(b"\n"));
        let _ = sent; // a refused connection may still have its answer to read
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(n) if n > 0 => serde_json::from_str(&answer).ok(),
            _ => None,
        }
    }
}

pub fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error response: {v}"))
}
