//! Just enough HTTP/1.1 for Ollama's discovery: the runner answers `GET /info`, serve polls it.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

/// Serves requests one at a time until the process is killed; `handler` maps a path to
/// `Some(json)` (200) or `None` (404).
pub fn serve(listener: TcpListener, mut handler: impl FnMut(&str) -> Option<String>) -> ! {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let mut reader = BufReader::new(&stream);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, body) = match handler(&path) {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", "404 page not found".to_string()),
        };
        let mut out = &stream;
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.shutdown(Shutdown::Write);
    }
}

pub enum GetError {
    /// Nothing listening yet: try again.
    NotReady,
    /// Connected but the answer did not come before the deadline.
    TimedOut,
    Failed(String),
}

/// One `GET` to 127.0.0.1:port, waiting for the answer until `deadline`.
pub fn get(port: u16, path: &str, deadline: Instant) -> Result<(u16, String), GetError> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|_| GetError::NotReady)?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(GetError::TimedOut);
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| GetError::Failed(e.to_string()))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| GetError::Failed(e.to_string()))?;
    let mut response = String::new();
    match stream.read_to_string(&mut response) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(GetError::TimedOut);
        }
        Err(e) => return Err(GetError::Failed(e.to_string())),
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}
