//! Property tests over untrusted input: config text, route templates and paths, and
//! messages seen by the selection expression. None may panic, and what is accepted must
//! behave. `scripts/fuzz.sh` runs them with many more cases.

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use crate::config::Config;
use crate::handshake::HeadBuffer;
use crate::routes::{RouteTable, SelectionExpression};

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._~-]{1,12}"
}

/// Feeds `bytes` to a head buffer in the given piece sizes (cycled); the outcome.
fn parse_in_pieces(bytes: &[u8], pieces: &[usize]) -> Result<Option<(String, Vec<u8>)>, String> {
    let mut buffer = HeadBuffer::default();
    let mut at = 0;
    for piece in pieces.iter().cycle() {
        if at >= bytes.len() {
            return Ok(None);
        }
        let end = (at + piece.max(&1)).min(bytes.len());
        buffer.buf_mut().extend_from_slice(&bytes[at..end]);
        at = end;
        match buffer.complete(16 * 1024) {
            Ok(Some((request, leftover))) => {
                return Ok(Some((format!("{request:?}"), leftover)));
            }
            Ok(None) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    unreachable!("the cycle ends when the bytes do")
}

proptest! {
    /// However an upgrade head is cut into reads, the incremental parser finds the same
    /// request as a parse of the whole; arbitrary bytes never panic.
    #[test]
    fn upgrade_heads_parse_alike_however_they_arrive(
        headers in prop::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..20),
        body in prop::collection::vec(any::<u8>(), 0..40),
        pieces in prop::collection::vec(1usize..64, 1..8),
        bare_newlines in any::<bool>(),
    ) {
        let eol = if bare_newlines { "\n" } else { "\r\n" };
        let mut text = format!("GET /t/r?q=1 HTTP/1.1{eol}");
        for (name, value) in &headers {
            text.push_str(&format!("{name}: {}{eol}", value.trim()));
        }
        text.push_str(eol);
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&body);
        let whole = parse_in_pieces(&bytes, &[bytes.len()]);
        let cut = parse_in_pieces(&bytes, &pieces);
        // What was read past the head depends on where the last read ended: it is some
        // prefix of the body. The request must be the same.
        if let Ok(Some((_, leftover))) = &cut {
            prop_assert!(body.starts_with(leftover));
        }
        let request = |r: Result<Option<(String, Vec<u8>)>, String>| r.map(|o| o.map(|(request, _)| request));
        prop_assert_eq!(request(whole), request(cut));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_head_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        pieces in prop::collection::vec(1usize..64, 1..8),
    ) {
        let _ = parse_in_pieces(&bytes, &pieces);
    }

    #[test]
    fn config_parsing_never_panics(text in ".{0,400}") {
        let _ = Config::parse(&text, Path::new("fuzz.toml"), Path::new("."));
    }

    #[test]
    fn config_parsing_of_toml_like_text_never_panics(
        keys in prop::collection::vec("(tenants|routes|plugins|limits|listen|\\$connect|/[a-z{}+]{0,8})", 1..6),
        value in "(\"[^\"]{0,12}\"|[0-9]{1,6}|true|\\{\\}|\\[\\])",
    ) {
        let text = format!("[{}]\nx = {value}\n", keys.join("."));
        let _ = Config::parse(&text, Path::new("fuzz.toml"), Path::new("."));
    }

    #[test]
    fn route_templates_and_paths_never_panic(template in "/[a-z{}+*/:%-]{0,30}", path in "/[a-z%0-9/._-]{0,40}") {
        let mut table = RouteTable::builder();
        let _ = table.insert(&template, ());
        let _ = table.at(&path);
    }

    #[test]
    fn static_routes_match_themselves(segments in prop::collection::vec(segment(), 1..5)) {
        let path = format!("/{}", segments.join("/"));
        let mut table = RouteTable::builder();
        table.insert(&path, 7).unwrap();
        let matched = table.at(&path).unwrap();
        prop_assert_eq!(*matched.value, 7);
        prop_assert!(matched.params.is_empty());
    }

    #[test]
    fn parameters_round_trip_through_percent_encoding(prefix in segment(), value in "\\PC{1,20}") {
        let mut table = RouteTable::builder();
        table.insert(&format!("/{prefix}/{{room}}"), ()).unwrap();
        let encoded: String = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).collect();
        let matched = table.at(&format!("/{prefix}/{encoded}")).unwrap();
        prop_assert_eq!(&matched.params[0].1, &value);
    }

    #[test]
    fn selection_never_panics(text in "\\PC{0,200}") {
        let expr = SelectionExpression::parse("$request.body.action").unwrap();
        let _ = expr.select(&text);
    }

    #[test]
    fn selection_finds_the_field(action in "\\PC{0,30}", noise in "\\PC{0,30}") {
        let expr = SelectionExpression::parse("$request.body.action").unwrap();
        let message = json!({ "before": noise, "action": action, "nested": { "action": "no" } }).to_string();
        prop_assert_eq!(expr.select(&message), Some(action));
    }

    #[test]
    fn selection_expression_parsing_never_panics(text in "\\PC{0,40}") {
        let _ = SelectionExpression::parse(&text);
    }
}
