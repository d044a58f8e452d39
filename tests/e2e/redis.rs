//! A real Redis for the cluster tests: its own `redis-server` on a free loopback port,
//! with no persistence and an empty temporary folder, killed when dropped. Tests can
//! stop it and start it again on the same port (empty) to play a Redis restart.
//!
//! `redis-server` must be installed: `scripts/setup-tests.sh` (which `scripts/test.sh`
//! runs) installs it from the system packages. Without it the fixture panics, so a test
//! that needs Redis fails; it never passes silently.
//!
//! Every call blocks the calling thread for at most [`WAIT`] (Redis answers in
//! microseconds; starting it takes milliseconds).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::WAIT;

/// The server binary, looked up on `PATH`.
const SERVER: &str = "redis-server";

/// How many free ports [`Redis::start`] tries when another process takes the one it
/// picked before `redis-server` binds it.
const PORT_ATTEMPTS: usize = 5;

/// How often the fixture polls a starting server.
const POLL: Duration = Duration::from_millis(10);

/// A running `redis-server` on `127.0.0.1:port`; killed when dropped.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// Why one attempt to start the server failed.
enum StartError {
    /// Another process holds the port.
    PortTaken,
    /// Anything else: the reason, with the server's log.
    Failed(String),
}

impl Redis {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("a temporary folder for redis-server");
        let mut redis = Redis {
            port: 0,
            child: None,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port();
            match redis.spawn() {
                Ok(()) => return redis,
                Err(StartError::PortTaken) => continue,
                Err(StartError::Failed(reason)) => panic!("{reason}"),
            }
        }
        panic!(
            "redis-server found each of {PORT_ATTEMPTS} free ports taken before it could bind it"
        )
    }

    /// `redis://127.0.0.1:PORT`, for `[cluster] redis_url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit; connecting then is refused.
    /// Does nothing if it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with no data (a Redis restart that lost
    /// everything), and waits until it answers `PING`. Stops it first if it runs.
    pub fn start_again(&mut self) {
        self.stop();
        // The port is free unless another process took it meanwhile; give it a moment.
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(StartError::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(StartError::PortTaken) => panic!(
                    "redis-server could not start again: another process holds port {} (for {WAIT:?})",
                    self.port
                ),
                Err(StartError::Failed(reason)) => panic!("{reason}"),
            }
        }
    }

    /// Sends one command (`&["HLEN", "key"]`) and returns the whole raw RESP reply, for
    /// example `":3\r\n"`, `"+OK\r\n"`, `"$-1\r\n"` or `"*1\r\n$3\r\nkey\r\n"`.
    /// Panics if Redis does not answer within [`WAIT`].
    pub fn command(&self, args: &[&str]) -> String {
        let addr = self.addr();
        let mut stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connecting to Redis at {addr} failed: {e}"));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        stream
            .write_all(&request)
            .unwrap_or_else(|e| panic!("sending {args:?} to Redis failed: {e}"));
        let mut reader = BufReader::new(stream);
        let mut reply = Vec::new();
        read_reply(&mut reader, &mut reply)
            .unwrap_or_else(|e| panic!("reading Redis's reply to {args:?} failed: {e}"));
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Sends one command whose reply is an integer (`DBSIZE`, `HLEN key`, `EXISTS key`)
    /// and returns it; panics on any other reply.
    pub fn integer(&self, args: &[&str]) -> i64 {
        let reply = self.command(args);
        reply
            .strip_prefix(':')
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("Redis answered {args:?} with {reply:?}, not an integer"))
    }

    fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Starts `redis-server` on `self.port` and waits until it answers `PING`.
    fn spawn(&mut self) -> Result<(), StartError> {
        let log_path = self.dir.path().join("redis.log");
        let log = std::fs::File::create(&log_path).expect("creating redis.log");
        let mut child = Command::new(SERVER)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!(
                        "{SERVER} is not installed (not found on PATH); the cluster tests need it: \
                         run scripts/setup-tests.sh, which installs it (apt-get install redis-server)"
                    )
                }
                panic!("starting {SERVER} failed: {e}")
            });
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for redis-server") {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Failed(format!(
                    "redis-server exited ({status}) before answering PING on port {}; its log:\n{log}",
                    self.port
                )));
            }
            match server_pid(self.addr()) {
                Some(pid) if pid == child.id() => {
                    self.child = Some(child);
                    return Ok(());
                }
                // Another Redis (another test's) took the port first; ours will exit.
                Some(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StartError::PortTaken);
                }
                None => {}
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(StartError::Failed(format!(
                    "redis-server did not answer PING on port {} within {WAIT:?}; its log:\n{log}",
                    self.port
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on now: bind port 0, read the port, release it.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding a free loopback port")
        .port()
}

/// The process id of the Redis at `addr` if it answers an inline `PING` with `+PONG`
/// (the id tells our server from another test's that took the port first).
fn server_pid(addr: SocketAddr) -> Option<u32> {
    let attempt = || -> std::io::Result<Option<u32>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.set_write_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line != "+PONG\r\n" {
            return Ok(None);
        }
        reader.get_mut().write_all(b"INFO server\r\n")?;
        let mut info = Vec::new();
        read_reply(&mut reader, &mut info)?;
        Ok(String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok()))
    };
    attempt().ok().flatten()
}

/// Reads one whole RESP2 reply into `out`, as it came.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    out.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line);
    let count = || -> std::io::Result<i64> {
        text[1..]
            .trim_end()
            .parse()
            .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, format!("bad reply {text:?}")))
    };
    match line.first() {
        Some(b'+' | b'-' | b':') => {}
        Some(b'$') => {
            let len = count()?;
            if len >= 0 {
                let mut data = vec![0; len as usize + 2];
                reader.read_exact(&mut data)?;
                out.extend_from_slice(&data);
            }
        }
        Some(b'*') => {
            for _ in 0..count()?.max(0) {
                read_reply(reader, out)?;
            }
        }
        _ => {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("unknown reply {text:?}"),
            ));
        }
    }
    Ok(())
}

#[test]
fn redis_fixture_starts_stops_and_restarts() {
    let mut redis = Redis::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(
        redis.command(&["SET", "greeting", "hello world"]),
        "+OK\r\n"
    );
    assert_eq!(
        redis.command(&["GET", "greeting"]),
        "$11\r\nhello world\r\n"
    );
    assert_eq!(redis.command(&["HSET", "h", "a", "1", "b", "2"]), ":2\r\n");
    assert_eq!(redis.integer(&["HLEN", "h"]), 2);
    assert_eq!(redis.integer(&["DBSIZE"]), 2);
    assert_eq!(
        redis.command(&["KEYS", "greet*"]),
        "*1\r\n$8\r\ngreeting\r\n"
    );
    assert_eq!(redis.command(&["GET", "missing"]), "$-1\r\n");
    assert!(redis.command(&["NOSUCHCOMMAND"]).starts_with("-ERR"));

    redis.stop();
    let refused = TcpStream::connect_timeout(&redis.addr(), WAIT)
        .expect_err("a stopped Redis still accepts connections");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    redis.stop(); // stopping twice is fine

    redis.start_again();
    assert_eq!(redis.port(), port, "start_again moved to another port");
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(
        redis.integer(&["DBSIZE"]),
        0,
        "the restarted Redis kept data"
    );

    let pid = redis.child.as_ref().unwrap().id();
    drop(redis);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "dropping the fixture left redis-server running"
    );
}
