//! Where the client's WebSocket frames begin and end in the byte stream.
//!
//! tungstenite keeps the capacity of its read and write buffers for the connection's
//! life, so one large message would pin its size in memory until the client leaves.
//! wsgate gives that memory back by rebuilding tungstenite's state once the message is
//! done (see `socket_io.rs`), which is only sound when tungstenite holds no unread byte.
//! The gate makes sure of that: the stream under tungstenite hands over bytes only up to
//! the end of the current frame, and the gate says when the stream is between messages.
//!
//! The gate only counts: it never judges a frame. A frame tungstenite refuses (unmasked,
//! oversize, reserved bits) ends the connection there, whatever the gate thinks of it.

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// The client's frame stream as handed over so far.
#[derive(Debug, Default, Clone)]
pub struct FrameGate {
    /// Header bytes of the current frame handed over so far.
    head: [u8; MAX_HEADER],
    /// How many of `head` are filled.
    head_len: usize,
    /// Payload bytes of the current frame still to hand over, once its header is whole.
    payload_left: Option<u64>,
    /// Inside a fragmented data message: its last frame had no FIN.
    fragmented: bool,
}

/// A frame header's length, payload length, FIN bit and opcode, once `bytes` hold it all.
fn parse(bytes: &[u8]) -> Option<(usize, u64, bool, u8)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let header = 2 + extended + mask;
    if bytes.len() < header {
        return None;
    }
    let payload = match extended {
        0 => u64::from(second & 0x7F),
        n => bytes[2..2 + n]
            .iter()
            .fold(0u64, |len, &b| (len << 8) | u64::from(b)),
    };
    Some((header, payload, first & 0x80 != 0, first & 0x0F))
}

impl FrameGate {
    /// How many of `pending` (the next bytes of the stream) may be handed over now
    /// without passing the end of the current frame. At least 1 when `pending` is not
    /// empty.
    pub fn limit(&self, pending: &[u8]) -> usize {
        if let Some(left) = self.payload_left {
            return usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(pending.len());
        }
        let mut head = self.head;
        let take = (MAX_HEADER - self.head_len).min(pending.len());
        head[self.head_len..self.head_len + take].copy_from_slice(&pending[..take]);
        match parse(&head[..self.head_len + take]) {
            Some((header, payload, ..)) => {
                let frame_rest = (header - self.head_len) as u64 + payload;
                usize::try_from(frame_rest)
                    .unwrap_or(usize::MAX)
                    .min(pending.len())
            }
            // The header is not whole even with all of `pending`: all of it is header.
            None => pending.len(),
        }
    }

    /// Records that `bytes` were handed over (at most [`limit`](Self::limit) of them).
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.payload_left {
                Some(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.payload_left = Some(left);
                    if left == 0 {
                        self.end_frame();
                    }
                }
                None => {
                    let take = (MAX_HEADER - self.head_len).min(bytes.len());
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                    match parse(&self.head[..self.head_len + take]) {
                        Some((header, payload, ..)) => {
                            bytes = &bytes[header - self.head_len..];
                            self.head_len = header;
                            self.payload_left = Some(payload);
                            if payload == 0 {
                                self.end_frame();
                            }
                        }
                        None => {
                            self.head_len += take;
                            bytes = &bytes[take..];
                        }
                    }
                }
            }
        }
    }

    /// The current frame was handed over whole.
    fn end_frame(&mut self) {
        let (_, _, fin, opcode) =
            parse(&self.head[..self.head_len]).expect("a whole header was parsed before");
        // Data frames (continuation, text, binary) move the message on; control frames
        // may come between fragments and change nothing.
        if opcode < 8 {
            self.fragmented = !fin;
        }
        self.head_len = 0;
        self.payload_left = None;
    }

    /// Whether everything handed over ends a whole message: no frame and no fragmented
    /// message is under way.
    pub fn at_message_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left.is_none() && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame with `payload` bytes.
    fn frame(fin: bool, opcode: u8, payload: usize) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload {
            0..=125 => out.push(0x80 | payload as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(0x55, payload));
        out
    }

    /// Hands `stream` over in reads of at most `read` bytes, as the socket delivers it in
    /// chunks of `chunk`; returns the positions where each read ended.
    fn hand_over(gate: &mut FrameGate, stream: &[u8], chunk: usize, read: usize) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let pending = &stream[at..(at + chunk).min(stream.len())];
            let n = gate.limit(pending).min(read);
            assert!(n > 0, "the gate must let something through");
            gate.advance(&pending[..n]);
            at += n;
            ends.push(at);
        }
        ends
    }

    #[test]
    fn reads_stop_at_frame_ends_and_fragments_are_followed() {
        let mut stream = frame(true, 2, 100_000);
        let first_end = stream.len();
        stream.extend(frame(false, 1, 10));
        stream.extend(frame(true, 9, 3)); // a ping between fragments
        let ping_end = stream.len();
        stream.extend(frame(true, 0, 0));
        let mut gate = FrameGate::default();
        let ends = hand_over(&mut gate, &stream, 16 * 1024, usize::MAX);
        assert!(ends.contains(&first_end));
        assert!(ends.contains(&ping_end));
        assert!(gate.at_message_boundary());

        let mut gate = FrameGate::default();
        gate.advance(&stream[..first_end]);
        assert!(gate.at_message_boundary());
        gate.advance(&stream[first_end..ping_end]);
        assert!(!gate.at_message_boundary(), "a fragmented message is open");
    }

    #[test]
    fn a_header_split_across_reads_is_assembled() {
        let stream = frame(true, 1, 70_000);
        let mut gate = FrameGate::default();
        gate.advance(&stream[..1]);
        assert!(!gate.at_message_boundary());
        assert_eq!(gate.limit(&stream[1..3]), 2, "still header");
        gate.advance(&stream[1..3]);
        assert_eq!(gate.limit(&stream[3..]), stream.len() - 3);
        gate.advance(&stream[3..]);
        assert!(gate.at_message_boundary());
    }

    proptest! {
        /// Whatever the frames and however the socket and the reader cut them, no read
        /// passes a frame's end, and the gate is at a boundary exactly after each
        /// message's last frame.
        #[test]
        fn no_read_crosses_a_frame(
            frames in prop::collection::vec((any::<bool>(), 0u8..3, 0usize..70_000), 1..8),
            chunk in 1usize..20_000,
            read in 1usize..300,
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            let mut fragmented = false;
            for (i, (fin, kind, len)) in frames.iter().enumerate() {
                let last = i + 1 == frames.len();
                // A valid sequence: the last frame finishes any open message.
                let fin = *fin || last;
                let opcode = if fragmented { 0 } else { [1, 2, 2][usize::from(*kind)] };
                stream.extend(frame(fin, opcode, *len));
                fragmented = !fin;
                ends.push((stream.len(), !fragmented));
            }
            let mut gate = FrameGate::default();
            let mut at = 0;
            while at < stream.len() {
                let pending = &stream[at..(at + chunk).min(stream.len())];
                let n = gate.limit(pending).min(read);
                prop_assert!(n > 0);
                let next_end = ends.iter().find(|(end, _)| *end > at).unwrap().0;
                prop_assert!(at + n <= next_end, "a read crossed a frame end");
                gate.advance(&pending[..n]);
                at += n;
                let boundary = ends.iter().any(|&(end, whole)| end == at && whole);
                prop_assert_eq!(gate.at_message_boundary(), boundary);
            }
        }
    }
}
