//! Starts the gateway on free loopback ports with a config of the test's choosing, and
//! gives tests WebSocket and HTTP clients that wait with timeouts.
//!
//! [`Gateway::start`] runs it in this process through `wsgate::run`, as `wsgate serve`
//! does, and lets a test reach its internals (a snapshot swap). [`Gateway::start_binary`]
//! runs the real `wsgate` binary, for tests that read its log or need a process.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The path of the gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// Lines the gateway wrote to stderr, and a signal for each new one.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<String>>,
    added: Notify,
    /// The gateway runs in this process, whose log the test cannot read.
    in_process: bool,
}

impl Logs {
    /// Waits until a log line satisfies `pred`; returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        assert!(
            !self.in_process,
            "waiting for a log line {what} of an in-process gateway: start it with Gateway::start_binary"
        );
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let added = self.added.notified();
                if let Some(line) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return line.clone();
                }
                added.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no log line {what} within {WAIT:?}; logs:\n{}",
                self.lines.lock().unwrap().join("\n")
            )
        })
    }

    /// Every line so far, one per line (for a failure message).
    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// How many log lines so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| pred(l))
            .count()
    }
}

/// A running gateway; stopped when dropped.
pub struct Gateway {
    /// The `wsgate` process, or the in-process gateway and its shutdown.
    running: Running,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Its log.
    pub logs: Arc<Logs>,
    _dir: tempfile::TempDir,
}

/// How a test gateway runs.
enum Running {
    /// The binary, killed on drop.
    Process(Child),
    /// `wsgate::run` on the test's runtime, cancelled on drop.
    InProcess {
        gateway: Arc<wsgate::Gateway>,
        shutdown: CancellationToken,
    },
}

impl Drop for Gateway {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process(child) => {
                let _ = child.start_kill();
            }
            Running::InProcess { shutdown, .. } => shutdown.cancel(),
        }
    }
}

/// The operator key every test gateway has (`[admin] bearer_keys`), for `/metrics`.
pub const OPS_KEY: &str = "ops-key";

/// The config every test gateway starts from: listeners on port 0, the operator key,
/// plus `tenants`.
pub fn config(tenants: &str) -> String {
    config_with_admin("", tenants)
}

/// As [`config`], with more `[admin]` keys.
pub fn config_with_admin(admin: &str, tenants: &str) -> String {
    format!(
        "[listen]\nws = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[admin]\nbearer_keys = [\"{OPS_KEY}\"]\n{admin}\n\n{tenants}"
    )
}

/// A `[tenants.T.plugins.NAME]` table for a built plugin, plus extra lines.
pub fn plugin(tenant: &str, name: &str, path: &str, extra: &str) -> String {
    format!("[tenants.{tenant}.plugins.{name}]\npath = {path:?}\n{extra}\n")
}

impl Gateway {
    /// Starts the gateway in this process on `config_text`, bound to free ports.
    pub async fn start(config_text: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsgate.toml");
        // Written too, so that a reload reads it again.
        std::fs::write(&path, config_text).unwrap();
        let mut config = wsgate::Config::parse(config_text, &path, dir.path())
            .unwrap_or_else(|e| panic!("the test config is invalid: {e}"));
        if config.compile.cache_dir.is_none() {
            // Compiled plugins are cached under the build directory, not the user's home.
            config.compile.cache_dir =
                Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wsgate"));
        }
        let gateway = Arc::new(
            wsgate::Gateway::new(&config)
                .unwrap_or_else(|e| panic!("the gateway did not start: {e}")),
        );
        let ws_listener = tokio::net::TcpListener::bind(config.listen.ws)
            .await
            .unwrap();
        let admin_listener = tokio::net::TcpListener::bind(config.listen.admin)
            .await
            .unwrap();
        let (ws, admin) = (
            ws_listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(wsgate::run(
            gateway.clone(),
            ws_listener,
            admin_listener,
            shutdown.clone(),
        ));
        Gateway {
            running: Running::InProcess { gateway, shutdown },
            ws,
            admin,
            logs: Arc::new(Logs {
                in_process: true,
                ..Logs::default()
            }),
            _dir: dir,
        }
    }

    /// The in-process gateway (for tests that reach its internals).
    pub fn internals(&self) -> &Arc<wsgate::Gateway> {
        match &self.running {
            Running::InProcess { gateway, .. } => gateway,
            Running::Process(_) => panic!("a binary gateway has no internals to reach"),
        }
    }

    /// The resident memory of a binary gateway, in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let Running::Process(child) = &self.running else {
            panic!("an in-process gateway shares the test's memory: use start_binary");
        };
        let pid = child.id().expect("the gateway is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Starts the `wsgate` binary on `config_text` and waits for both listening lines.
    pub async fn start_binary(config_text: &str) -> Gateway {
        Self::start_binary_with_open_files(config_text, None).await
    }

    /// As [`start_binary`](Self::start_binary), with the process's open-files limit (soft
    /// and hard) set to `open_files` when given.
    pub async fn start_binary_with_open_files(
        config_text: &str,
        open_files: Option<u64>,
    ) -> Gateway {
        Self::launch(config_text, open_files, &[]).await
    }

    /// Starts the binary with an open-files limit and extra `serve` arguments.
    async fn launch(config_text: &str, open_files: Option<u64>, args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsgate.toml");
        std::fs::write(&path, config_text).unwrap();
        let mut command = Command::new(BIN);
        if let Some(limit) = open_files {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child
            // between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .args(["serve", "--config"])
            .arg(&path)
            .args(args)
            .env("WSGATE_LOG", "info,wsgate=debug")
            // Compiled plugins are cached under the build directory, not the user's home.
            .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the wsgate binary");

        let logs = Arc::new(Logs::default());
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lines.lock().unwrap().push(line);
                sink.added.notify_waiters();
            }
        });

        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut ws, mut admin) = (None, None);
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while ws.is_none() || admin.is_none() {
                let Some(line) = stdout.next_line().await.unwrap() else {
                    break;
                };
                if let Some(addr) = line.strip_prefix("listening ws=") {
                    ws = Some(addr.parse().unwrap());
                } else if let Some(addr) = line.strip_prefix("listening admin=") {
                    admin = Some(addr.parse().unwrap());
                }
            }
        })
        .await;
        let (Ok(()), Some(ws), Some(admin)) = (started, ws, admin) else {
            let logs = logs.lines.lock().unwrap().join("\n");
            panic!("the gateway did not start; its log:\n{logs}");
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Gateway {
            running: Running::Process(child),
            ws,
            admin,
            logs,
            _dir: dir,
        }
    }

    /// Sends `signal` (`libc::SIGTERM` for a graceful shutdown, `libc::SIGKILL` for a
    /// crash) to a binary gateway and waits up to [`WAIT`] for it to exit; returns how
    /// it exited.
    pub async fn signal(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let Running::Process(child) = &mut self.running else {
            panic!("an in-process gateway cannot be signalled: use start_binary");
        };
        let pid = child.id().expect("the gateway is still running");
        // SAFETY: kill(2) touches no memory of ours; `pid` is our child, not yet reaped
        // (tokio reaps it only in `wait`), so it cannot name another process.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
        tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("the gateway did not exit within {WAIT:?} of signal {signal}")
            })
            .expect("waiting for the gateway")
    }

    /// Sends `signal` to a binary gateway without waiting for anything.
    pub fn send_signal(&self, signal: libc::c_int) {
        let Running::Process(child) = &self.running else {
            panic!("an in-process gateway cannot be signalled: use start_binary");
        };
        let pid = child.id().expect("the gateway is still running");
        // SAFETY: as in `signal`: our own child, not yet reaped.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// Whether a binary gateway's process is still running.
    pub fn running(&mut self) -> bool {
        let Running::Process(child) = &mut self.running else {
            return true;
        };
        matches!(child.try_wait(), Ok(None))
    }

    /// The config file the gateway was started on (a reload reads it again).
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir.path().join("wsgate.toml")
    }

    /// Waits up to [`WAIT`] for a binary gateway to exit; returns how it exited.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let Running::Process(child) = &mut self.running else {
            panic!("an in-process gateway does not exit");
        };
        tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("the gateway did not exit within {WAIT:?}"))
            .expect("waiting for the gateway")
    }

    /// The Prometheus text of `GET /metrics` on the admin listener, as the operator.
    pub async fn metrics(&self) -> String {
        let (status, _, text) = http(
            "GET",
            &format!("http://{}/metrics", self.admin),
            &[("authorization".into(), format!("Bearer {OPS_KEY}"))],
            vec![],
        )
        .await;
        assert_eq!(status, 200, "/metrics refused the operator key: {text}");
        text
    }

    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.ws)
    }

    /// Connects a WebSocket client to `path`.
    pub async fn connect(&self, path: &str) -> Client {
        let url = self.url(path);
        let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {url} failed: {e}"));
        client
    }

    /// Tries an upgrade that must be refused; returns the HTTP status and body.
    pub async fn refused(
        &self,
        request: impl tungstenite::client::IntoClientRequest + Unpin,
    ) -> (u16, String) {
        let (status, _, body) = refusal(request).await;
        (status, body)
    }

    /// Sends raw bytes to the WebSocket listener and returns the whole answer.
    pub async fn raw_http(&self, request: &str) -> String {
        raw(self.ws, request).await
    }

    /// Sends raw bytes to the admin listener and returns the whole answer.
    pub async fn raw_admin(&self, request: &str) -> String {
        raw(self.admin, request).await
    }
}

/// Sends raw bytes to `address` and returns the whole answer.
async fn raw(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the raw HTTP answer timed out")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Tries an upgrade that must be refused; returns the HTTP status, headers and body.
pub async fn refusal(
    request: impl tungstenite::client::IntoClientRequest + Unpin,
) -> (u16, tungstenite::http::HeaderMap, String) {
    let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade attempt timed out");
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), response.headers().clone(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, but the upgrade succeeded"),
    }
}

/// Runs the binary on a config that must be refused; returns its exit code and stderr.
pub async fn start_fails(config_text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the gateway neither started nor failed within a minute")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("listening"),
        "the gateway started on a bad config:\n{stdout}"
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The next data or close message, skipping pings and pongs.
pub async fn recv(client: &mut Client) -> Message {
    loop {
        let next = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no message within the wait")
            .expect("the connection ended without a close frame");
        match next {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(message) => return message,
            Err(err) => panic!("receive failed: {err}"),
        }
    }
}

/// The next message, which must be text.
pub async fn recv_text(client: &mut Client) -> String {
    match recv(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message parsed as JSON.
pub async fn recv_json(client: &mut Client) -> serde_json::Value {
    let text = recv_text(client).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends a text message.
pub async fn send_text(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("send failed");
}

/// Sends `text` and returns the text reply.
pub async fn ask(client: &mut Client, text: &str) -> String {
    send_text(client, text).await;
    recv_text(client).await
}

/// Waits for the server's close frame and returns it.
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    loop {
        match tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no close within the wait")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("connection failed instead of closing: {err}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// The id of a client on a `/connections`-style route (connection-id plugin).
pub async fn own_id(client: &mut Client) -> String {
    send_text(client, "{}").await;
    recv_json(client).await["connection_id"]
        .as_str()
        .expect("a connection_id answer")
        .to_owned()
}

/// Status, `x-amzn-ErrorType` header, body of an HTTP answer.
pub type HttpAnswer = (u16, Option<String>, String);

/// Sends one HTTP request with extra headers.
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> HttpAnswer {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, kind, response.text().await.unwrap())
}

impl Gateway {
    /// As [`Gateway::start_binary`], with `args` after `serve --config FILE` (e.g.
    /// `--log-format json`).
    pub async fn start_binary_with_args(config_text: &str, args: &[&str]) -> Gateway {
        Self::launch(config_text, None, args).await
    }
}

impl Logs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Runs `wsgate` with `args` to its end; returns its exit code, stdout and stderr.
pub async fn run_binary(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(BIN)
            .args(args)
            // Compiled plugins are cached under the build directory, not the user's home.
            .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("wsgate did not finish within two minutes")
    .expect("running the wsgate binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
