//! Random ids shaped like the ones the replaced gateways hand out, so backends that
//! store, log or pattern-match them keep working.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// `n` random bytes from `wasi:random`.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // wasi:random does not fail in practice; should it, ids must still differ from
        // one event to the next, so fall back to the clock rather than to zeros.
        let mut seed = crate::clock::now_ms() ^ 0x9E37_79B9_7F4A_7C15;
        for byte in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
    }
    bytes
}

/// An AWS-style request or message id: 11 random bytes in standard base64, 16 characters
/// ending in `=` (e.g. `XfGLwFTktjMFsLg=`), as API Gateway's `requestId`,
/// `extendedRequestId` and `messageId` look.
pub fn aws() -> String {
    STANDARD.encode(random::<11>())
}

/// Two AWS-style ids (a request's and a message's) from one draw of random bytes.
pub fn aws_pair() -> (String, String) {
    let bytes = random::<22>();
    (STANDARD.encode(&bytes[..11]), STANDARD.encode(&bytes[11..]))
}

/// Crockford's base32 alphabet, in ASCII order so that ids sort like their values.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A Yandex-style message id. Yandex promises only that "the alphabetic message ID order
/// is time-based", so this is a ULID: 10 characters of milliseconds then 16 random ones,
/// which sort by time as plain strings.
pub fn time_ordered(now_ms: u64) -> String {
    let mut out = String::with_capacity(26);
    // 48 bits of time in 10 base32 digits (the top 2 bits are always 0).
    for i in (0..10).rev() {
        out.push(CROCKFORD[((now_ms >> (i * 5)) & 31) as usize] as char);
    }
    let bits = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&random::<10>());
        b
    });
    for i in (0..16).rev() {
        out.push(CROCKFORD[((bits >> (i * 5)) & 31) as usize] as char);
    }
    out
}
