//! The client's own address behind a load balancer. A connection from one of
//! `listen.trusted_proxies` may say whose it is: in a PROXY protocol header (v1 text
//! or v2 binary, before anything else, when `listen.proxy_protocol` is on) or in
//! `X-Forwarded-For`. Anyone else's word is ignored, so a client cannot choose the
//! address its limits and logs see.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest PROXY v1 line, `\r\n` included (the protocol's own bound).
const V1_MAX: usize = 107;
/// The PROXY v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The most address bytes a v2 header may carry here: TLVs beyond the addresses are
/// skipped, but only this many, so a header cannot make the gateway read at will.
const V2_MAX_LEN: usize = 512;

/// The networks whose connections may name the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `entries`, each an address (`10.0.0.1`) or a network (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|entry| {
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| {
                        format!("`{entry}` is not an address or a network (e.g. \"10.0.0.0/8\", \"127.0.0.1\")")
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer` according to `X-Forwarded-For` (every value of the
    /// header, in order): the last address that is not a trusted proxy, read from the
    /// right, each hop vouching for the one before it. `peer` itself when it is not
    /// trusted or the header is absent or unreadable.
    pub fn forwarded_client(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded.iter().rev().flat_map(|v| v.rsplit(','));
        for hop in hops {
            let Some(ip) = parse_hop(hop.trim()) else {
                // An entry we cannot read ends the chain of trust there.
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(ip);
    }
    SocketAddr::from_str(hop).ok().map(|a| a.ip())
}

/// An IPv4-mapped IPv6 address as IPv4, so `::ffff:10.0.0.1` matches `10.0.0.0/8`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The bytes are not a PROXY v1 or v2 header.
    #[error("not a PROXY protocol header: {0}")]
    Malformed(String),
    /// The socket failed or closed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a PROXY protocol header (v1 or v2) from the start of `tcp`, consuming exactly
/// its bytes. Returns the client's address, or `None` when the header says the
/// connection is the proxy's own (`UNKNOWN`, `LOCAL`, or an address family other than
/// TCP over IPv4 or IPv6).
pub async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    // Read exactly what the header holds and no more: what follows (a TLS handshake, a
    // request head) belongs to the next reader. So the v1 line is read a byte at a
    // time; it comes once per connection, from a trusted proxy.
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head[..6]).await?;
    if &head[..6] == b"PROXY " {
        let mut line = head[..6].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() == V1_MAX {
                return Err(ProxyError::Malformed(format!(
                    "v1: no line end within {V1_MAX} bytes"
                )));
            }
            line.push(tcp.read_u8().await?);
        }
        return parse_v1(&line[..line.len() - 2]);
    }
    if head[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyError::Malformed(
            "it starts with neither `PROXY ` nor the v2 signature".into(),
        ));
    }
    tcp.read_exact(&mut head[6..]).await?;
    read_v2(tcp, &head).await
}

/// Parses a v1 line without its `\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let bad = |why: &str| ProxyError::Malformed(format!("v1: {why}"));
    let line = std::str::from_utf8(line).map_err(|_| bad("not ASCII"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(bad("it does not start with PROXY"));
    }
    let family = parts.next().ok_or_else(|| bad("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(bad("expected `PROXY TCP4|TCP6 SRC DST SPORT DPORT`"));
    };
    let ip = match family {
        "TCP4" => Ipv4Addr::from_str(src).map(IpAddr::V4),
        "TCP6" => Ipv6Addr::from_str(src).map(IpAddr::V6),
        _ => return Err(bad("the protocol is not TCP4, TCP6 or UNKNOWN")),
    }
    .map_err(|_| bad("the source is not an address of its protocol"))?;
    let port = u16::from_str(sport).map_err(|_| bad("the source port is not a port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Reads the rest of a v2 header whose first 16 bytes are `head`.
async fn read_v2(tcp: &mut TcpStream, head: &[u8; 16]) -> Result<Option<SocketAddr>, ProxyError> {
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_LEN {
        return Err(ProxyError::Malformed(format!(
            "v2: {len} bytes of addresses, over {V2_MAX_LEN}"
        )));
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    parse_v2(head, &body)
}

/// Parses a v2 header: its 16 first bytes and the `len` bytes after.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let bad = |why: &str| ProxyError::Malformed(format!("v2: {why}"));
    if head[..12] != V2_SIGNATURE {
        return Err(bad("no signature"));
    }
    if head[12] >> 4 != 2 {
        return Err(bad("the version is not 2"));
    }
    match head[12] & 0x0f {
        0 => return Ok(None), // LOCAL: the proxy's own connection (a health check).
        1 => {}
        _ => return Err(bad("the command is neither LOCAL nor PROXY")),
    }
    match head[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = body.get(..12).ok_or_else(|| bad("short IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 => {
            let a = body.get(..36).ok_or_else(|| bad("short IPv6 addresses"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // UDP, UNIX sockets, unspecified: not a TCP client to name.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.forwarded_client(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // A trusted peer names the client.
        assert_eq!(
            proxies.forwarded_client(ip("127.0.0.1"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        // A client cannot prepend a forged hop: the rightmost untrusted entry wins.
        assert_eq!(
            proxies.forwarded_client(ip("10.1.1.1"), &["6.6.6.6, 198.51.100.7, 10.2.2.2"]),
            ip("198.51.100.7")
        );
        // Several header lines read as one list, in order.
        assert_eq!(
            proxies.forwarded_client(ip("10.1.1.1"), &["6.6.6.6", "198.51.100.7:443"]),
            ip("198.51.100.7")
        );
        // Garbage ends the chain at the last hop that was vouched for.
        assert_eq!(
            proxies.forwarded_client(ip("10.1.1.1"), &["nonsense"]),
            ip("10.1.1.1")
        );
        // IPv4-mapped IPv6 peers match IPv4 networks.
        assert_eq!(
            proxies.forwarded_client(ip("::ffff:10.0.0.3"), &["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
    }

    #[test]
    fn v1_lines() {
        let addr = parse_v1(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443").unwrap();
        assert_eq!(addr, Some("192.0.2.1:5000".parse().unwrap()));
        let addr = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 5000 443").unwrap();
        assert_eq!(addr, Some("[2001:db8::1]:5000".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 99999 443",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2",
            b"PROXY TCP4 192.0.2.1",
            b"GET / HTTP/1.1",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> [u8; 16] {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(&V2_SIGNATURE);
        head[12] = 0x20 | command;
        head[13] = family;
        head[14..].copy_from_slice(&(body.len() as u16).to_be_bytes());
        head
    }

    #[test]
    fn v2_headers() {
        let body = [192, 0, 2, 1, 192, 0, 2, 2, 0x13, 0x88, 0x01, 0xbb];
        let addr = parse_v2(&v2(1, 0x11, &body), &body).unwrap();
        assert_eq!(addr, Some("192.0.2.1:5000".parse().unwrap()));
        let mut body6 = vec![0u8; 36];
        body6[..16].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body6[32..34].copy_from_slice(&5000u16.to_be_bytes());
        let addr = parse_v2(&v2(1, 0x21, &body6), &body6).unwrap();
        assert_eq!(addr, Some("[2001:db8::1]:5000".parse().unwrap()));
        assert_eq!(parse_v2(&v2(0, 0x11, &body), &body).unwrap(), None, "LOCAL");
        assert!(
            parse_v2(&v2(1, 0x11, &body[..4]), &body[..4]).is_err(),
            "short"
        );
        assert!(parse_v2(&v2(7, 0x11, &body), &body).is_err(), "bad command");
    }
}
