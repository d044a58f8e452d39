//! The one rule for closes an application asks for (a plugin's `disconnect`, the
//! management API's `DELETE`), and the close-frame reason limit the gateway's own closes
//! obey.
//!
//! Codes an application may send: **1000** and **3000–4999**. RFC 6455 §7.4.2 reserves
//! 1000–2999 for the protocol and its extensions (1001, 1002, 1007, 1008, 1009 … describe
//! what the gateway itself saw, and the gateway sends them), leaves 3000–3999 to
//! libraries, frameworks and applications and 4000–4999 to private use; 1000 is the
//! normal closure every API we replace sends on `DeleteConnection`. AWS's
//! `DeleteConnection` takes no code at all, so anything past 1000 is our extension, and
//! the widest range RFC 6455 gives applications is the honest one.

use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A close frame carries a 2-byte code and at most 123 bytes of UTF-8 reason
/// (RFC 6455 §5.5: control frames hold 125 bytes of payload).
pub const MAX_REASON_BYTES: usize = 123;

/// Why an application's close was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// The code is outside 1000 and 3000–4999.
    #[error("close code {0} is not allowed: use 1000 or 3000-4999")]
    Code(u16),
    /// The reason does not fit a close frame.
    #[error("the close reason is {0} bytes; a close frame holds at most 123")]
    ReasonTooLong(usize),
}

/// A close to send: a code and a reason that fit a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: u16,
    /// The reason, at most [`MAX_REASON_BYTES`].
    pub reason: String,
}

impl Close {
    /// The normal closure with no reason, what a plain `DELETE` sends.
    pub fn normal() -> Close {
        Close {
            code: 1000,
            reason: String::new(),
        }
    }

    /// A close an application asked for, checked against the rule above.
    pub fn requested(code: u16, reason: impl Into<String>) -> Result<Close, CloseError> {
        let reason = reason.into();
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            return Err(CloseError::Code(code));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(CloseError::ReasonTooLong(reason.len()));
        }
        Ok(Close { code, reason })
    }

    /// A close the gateway sends itself: any code, the reason cut at a character
    /// boundary to fit.
    pub fn gateway(code: u16, reason: impl Into<String>) -> Close {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Close { code, reason }
    }

    /// As tungstenite's close frame.
    pub fn frame(&self) -> CloseFrame {
        CloseFrame {
            code: self.code.into(),
            reason: self.reason.clone().into(),
        }
    }
}

impl From<&CloseFrame> for Close {
    fn from(frame: &CloseFrame) -> Close {
        Close {
            code: frame.code.into(),
            reason: frame.reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applications_may_send_1000_and_3000_to_4999() {
        for code in [1000, 3000, 3999, 4000, 4999] {
            assert_eq!(Close::requested(code, "").map(|c| c.code), Ok(code));
        }
        for code in [0, 999, 1001, 1005, 1006, 1015, 2999, 5000, u16::MAX] {
            assert_eq!(Close::requested(code, ""), Err(CloseError::Code(code)));
        }
    }

    #[test]
    fn reasons_longer_than_a_frame_holds_are_refused_or_cut() {
        assert!(Close::requested(1000, "x".repeat(123)).is_ok());
        assert_eq!(
            Close::requested(1000, "x".repeat(124)),
            Err(CloseError::ReasonTooLong(124))
        );
        // 'é' is two bytes: a cut never splits it.
        let cut = Close::gateway(1009, "é".repeat(100));
        assert_eq!(cut.reason.len(), 122);
        assert_eq!(Close::gateway(1009, "short").reason, "short");
    }
}
