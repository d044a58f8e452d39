//! `wsgate connections …`: the management API from a shell, as
//! `yc serverless api-gateway websocket get/send/disconnect` does for Yandex Cloud;
//! `wsgate logs`: a tenant's execution log, read or followed.

use std::io::Write as _;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use wsgate::client::{Client, Credentials, EventParser};

/// The environment variable the bearer key is read from.
const KEY_VARIABLE: &str = "WSGATE_KEY";

/// Where and as whom to call the management API.
#[derive(Args)]
pub struct Target {
    /// The admin listener, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "WSGATE_ENDPOINT", default_value = "http://127.0.0.1:9090")]
    endpoint: String,
    /// The tenant.
    #[arg(long, env = "WSGATE_TENANT")]
    tenant: String,
    /// A bearer key of the tenant. Prefer the environment variable WSGATE_KEY: a key
    /// on the command line shows in `ps` to every user of the machine (a warning says
    /// so). Without either, AWS credentials are read from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN, AWS_REGION) and requests are signed
    /// with SigV4.
    // Deliberately not `env = "WSGATE_KEY"`: clap would then hide where the key came
    // from, and only a key typed on the command line deserves the warning.
    #[arg(long)]
    key: Option<String>,
    /// Print the API's JSON instead of readable text.
    #[arg(long)]
    json: bool,
}

/// The `connections` verbs.
#[derive(Subcommand)]
pub enum Command {
    /// List open connections (id, route, connected at).
    List {
        #[command(flatten)]
        target: Target,
        /// Only connections on this route template, e.g. /chat/{room}.
        #[arg(long)]
        route: Option<String>,
    },
    /// Show one connection.
    Get {
        /// The connection id. Ids may start with `-`, so one is never taken for a flag.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Send data to a connection (text when it is UTF-8, unless --binary).
    Send {
        /// The connection id. Ids may start with `-`, so one is never taken for a flag.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// The data to send.
        #[arg(long)]
        data: String,
        /// Send a binary frame.
        #[arg(long)]
        binary: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Close a connection.
    Disconnect {
        /// The connection id. Ids may start with `-`, so one is never taken for a flag.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Close code: 1000 or 3000-4999.
        #[arg(long, default_value_t = 1000)]
        code: u16,
        /// Close reason.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `wsgate logs`: a tenant's execution log (its plugins' log lines and failures, and
/// its management API audit trail), oldest first.
#[derive(Args)]
pub struct Logs {
    #[command(flatten)]
    target: Target,
    /// Only entries after this sequence number: the last one a previous run printed
    /// (`--json` shows `seq`).
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// At most this many entries, then exit (with --follow too). Default: every entry
    /// the gateway keeps, or with --follow no end.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep printing entries as they are recorded, until interrupted.
    #[arg(long)]
    follow: bool,
}

impl Target {
    fn client(&self) -> anyhow::Result<Client> {
        let from_env = std::env::var(KEY_VARIABLE).ok().filter(|v| !v.is_empty());
        if self.key.is_some() {
            eprintln!(
                "warning: --key puts the key on the command line, where `ps` shows it to every user of this machine; set {KEY_VARIABLE} instead"
            );
        }
        let credentials = match self.key.clone().or(from_env) {
            Some(key) => Credentials::Bearer(key),
            None => {
                let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let (Some(access_key_id), Some(secret_access_key)) =
                    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
                else {
                    anyhow::bail!(
                        "no credentials: set {KEY_VARIABLE} to a bearer key of the tenant, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to sign with SigV4"
                    );
                };
                Credentials::Aws {
                    access_key_id,
                    secret_access_key,
                    session_token: var("AWS_SESSION_TOKEN"),
                    region: var("AWS_REGION")
                        .or_else(|| var("AWS_DEFAULT_REGION"))
                        .unwrap_or_else(|| "us-east-1".into()),
                }
            }
        };
        let endpoint = format!("{}/{}", self.endpoint.trim_end_matches('/'), self.tenant);
        Ok(Client::new(&endpoint, credentials))
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    if encoded.is_empty() {
        encoded
    } else {
        format!("?{encoded}")
    }
}

fn json(body: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(body)?)
}

/// Runs a verb; API errors become the error the process exits with.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let out = &mut std::io::stdout();
    match command {
        Command::List { target, route } => {
            let client = target.client()?;
            let mut token = String::new();
            let mut pages = Vec::new();
            loop {
                let mut params = vec![("limit", "1000")];
                if let Some(route) = &route {
                    params.push(("route", route));
                }
                if !token.is_empty() {
                    params.push(("nextToken", &token));
                }
                let answer = client
                    .call(
                        Method::GET,
                        &format!("/@connections{}", query(&params)),
                        Vec::new(),
                    )
                    .await?;
                let page = json(&answer.body)?;
                let next = page["nextToken"].as_str().map(str::to_owned);
                pages.push(page);
                match next {
                    Some(next) => token = next,
                    None => break,
                }
            }
            let items: Vec<Value> = pages
                .iter()
                .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
                .collect();
            if target.json {
                let _ = writeln!(out, "{}", serde_json::json!({ "items": items }));
            } else {
                for item in &items {
                    let _ = writeln!(
                        out,
                        "{}  {}  {}",
                        str_of(&item["connectionId"]),
                        str_of(&item["connectedAt"]),
                        str_of(&item["route"])
                    );
                }
                let _ = writeln!(out, "{} connection(s)", items.len());
            }
        }
        Command::Get { id, target } => {
            let client = target.client()?;
            let answer = client
                .call(Method::GET, &Client::connection_path(&id), Vec::new())
                .await?;
            let info = json(&answer.body)?;
            if target.json {
                let _ = writeln!(out, "{info}");
            } else {
                for (label, value) in [
                    ("id", &info["connectionId"]),
                    ("route", &info["route"]),
                    ("uri", &info["uri"]),
                    ("connected_at", &info["connectedAt"]),
                    ("last_active_at", &info["lastActiveAt"]),
                    ("source_ip", &info["identity"]["sourceIp"]),
                    ("user_agent", &info["identity"]["userAgent"]),
                ] {
                    let _ = writeln!(out, "{label}: {}", str_of(value));
                }
            }
        }
        Command::Send {
            id,
            data,
            binary,
            target,
        } => {
            let client = target.client()?;
            let path = format!(
                "{}{}",
                Client::connection_path(&id),
                if binary { "?type=binary" } else { "" }
            );
            let size = data.len();
            client.call(Method::POST, &path, data.into_bytes()).await?;
            if target.json {
                let _ = writeln!(out, "{}", serde_json::json!({ "sent": size }));
            } else {
                let _ = writeln!(out, "sent {size} bytes to {id}");
            }
        }
        Command::Disconnect {
            id,
            code,
            reason,
            target,
        } => {
            let client = target.client()?;
            let code_text = code.to_string();
            let path = format!(
                "{}{}",
                Client::connection_path(&id),
                query(&[("code", &code_text), ("reason", &reason)])
            );
            client.call(Method::DELETE, &path, Vec::new()).await?;
            if target.json {
                let _ = writeln!(out, "{}", serde_json::json!({ "disconnected": id }));
            } else {
                let _ = writeln!(out, "disconnected {id}");
            }
        }
    }
    Ok(())
}

fn str_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Runs `wsgate logs`: entries on stdout, one a line (`--json`: the entry's JSON);
/// entries lost to the log's bounds are reported on stderr.
pub async fn logs(args: Logs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let mut printer = Printer {
        json: args.target.json,
        left: args.limit.unwrap_or(u64::MAX),
        since: args.since,
    };
    if printer.left == 0 {
        return Ok(());
    }
    if args.follow {
        return follow(&client, &mut printer).await;
    }
    loop {
        let limit = printer.left.min(1000).to_string();
        let since = printer.since.to_string();
        let path = format!("/@logs{}", query(&[("since", &since), ("limit", &limit)]));
        let page = json(&client.call(Method::GET, &path, Vec::new()).await?.body)?;
        printer.dropped(page["dropped"].as_u64().unwrap_or(0));
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            if printer.print(entry) {
                return Ok(());
            }
        }
        match page["next"].as_u64() {
            Some(next) if !entries.is_empty() => printer.since = next,
            _ => return Ok(()),
        }
    }
}

/// Follows the log as server-sent events; a stream the gateway dropped for reading too
/// slowly is followed again from the last entry printed.
async fn follow(client: &Client, printer: &mut Printer) -> anyhow::Result<()> {
    loop {
        let since = printer.since.to_string();
        let path = format!("/@logs{}", query(&[("follow", "1"), ("since", &since)]));
        let accept = [("accept", "text/event-stream")];
        let mut response = client.open(Method::GET, &path, Vec::new(), &accept).await?;
        let mut parser = EventParser::default();
        'stream: loop {
            let Some(chunk) = response.chunk().await.map_err(|e| client.transport(e))? else {
                anyhow::bail!(
                    "the gateway ended the stream (it is shutting down or restarting); resume with --since {}",
                    printer.since
                );
            };
            for event in parser.push(&chunk)? {
                match event.event.as_deref() {
                    None | Some("message") => {
                        if printer.print(&serde_json::from_str(&event.data)?) {
                            return Ok(());
                        }
                    }
                    Some("dropped") => {
                        let data: Value = serde_json::from_str(&event.data)?;
                        printer.dropped(data["dropped"].as_u64().unwrap_or(0));
                    }
                    Some("overflow") => {
                        eprintln!(
                            "warning: this reader fell behind the log and the gateway dropped it; following again after {}",
                            printer.since
                        );
                        break 'stream;
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// Prints entries and remembers where the next read starts.
struct Printer {
    json: bool,
    /// Entries still to print.
    left: u64,
    /// The last entry printed (or the `--since` given).
    since: u64,
}

impl Printer {
    /// Prints one entry; true once `--limit` entries are printed.
    fn print(&mut self, entry: &Value) -> bool {
        let out = &mut std::io::stdout();
        if self.json {
            let _ = writeln!(out, "{entry}");
        } else {
            let _ = writeln!(
                out,
                "{} {:<5} {:<7} {} {} {} {}",
                str_of(&entry["time"]),
                str_of(&entry["level"]),
                str_of(&entry["kind"]),
                str_of(&entry["plugin"]),
                str_of(&entry["route"]),
                str_of(&entry["connectionId"]),
                str_of(&entry["message"]),
            );
        }
        self.since = entry["seq"].as_u64().unwrap_or(self.since);
        self.left -= 1;
        self.left == 0
    }

    /// Says on stderr that entries are lost.
    fn dropped(&self, dropped: u64) {
        if dropped > 0 {
            eprintln!(
                "warning: {dropped} entries after {} are no longer kept (the log keeps only its newest entries: execution_log_entries and execution_log_bytes)",
                self.since
            );
        }
    }
}
