//! A tiny HTTP server on the host's loopback that hands files to guests (Ignition fetches the
//! ibu binary under test from it on the first boot; the guest sees the host as 10.0.2.2).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::report;

/// The address guests reach the host's loopback at (QEMU user networking).
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

pub struct FileServer {
    pub port: u16,
}

impl FileServer {
    /// Serve `files` (URL path without the leading `/` -> contents) until the process exits.
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the file server")?;
        let port = listener.local_addr()?.port();
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let files = Arc::clone(&files);
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &files) {
                        report::note(&format!("file server: {e:#}"));
                    }
                });
            }
        });
        Ok(FileServer { port })
    }

    /// The URL of `name` as a guest sees it.
    pub fn url(&self, name: &str) -> String {
        format!("http://{HOST_FROM_GUEST}:{}/{name}", self.port)
    }
}

fn serve(mut stream: TcpStream, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let name = path.trim_start_matches('/');
    match files
        .get(name)
        .filter(|_| method == "GET" || method == "HEAD")
    {
        Some(body) => {
            report::note(&format!(
                "file server: {method} {path} ({} bytes)",
                body.len()
            ));
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                stream.write_all(body)?;
            }
        }
        None => {
            report::note(&format!("file server: {method} {path}: 404"));
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
    }
    stream.flush()?;
    Ok(())
}
