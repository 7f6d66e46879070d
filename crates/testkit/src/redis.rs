//! A throwaway Redis for tests of the distributed cache tier: `redis-server`
//! on a free port, no persistence, killed on drop. A missing binary is a
//! loud error saying how to install it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::port::free_port;

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

/// Ports tried before giving up (another process may take a free port
/// between choosing it and redis-server binding it).
const START_ATTEMPTS: usize = 5;

impl RedisServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> Result<RedisServer> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Setup("redis-server did not start".into())))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (to test what happens while Redis is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Runs redis-server on `self.port` and waits until that very process
    /// answers there (not another one that took the port meanwhile).
    fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Setup(format!(
                "cannot run redis-server ({e}); install it with `apt-get install -y redis-server` or ./scripts/install-deps.sh"
            )))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let problem = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break format!("exited ({status}): port {} taken?", self.port);
            }
            match serving_pid(self.port) {
                Some(pid) if pid == child.id() => {
                    self.child = Some(child);
                    return Ok(());
                }
                Some(pid) => break format!("port {} is served by process {pid}", self.port),
                None if Instant::now() > deadline => {
                    break format!("did not listen on port {} within 10 s", self.port)
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(Error::Setup(format!("redis-server {problem}")))
    }
}

/// The process id of the Redis answering on `port` (`INFO server`), if one does.
fn serving_pid(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((pid, _)) = rest.split_once("\r\n") {
                return pid.trim().parse().ok();
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
