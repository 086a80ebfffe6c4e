//! Just enough of RFC 6455 framing to know, as bytes stream through a tunnel, where frames begin and end
//! and which carry application data — without buffering payloads.
//!
//! That is what lets tideway close a WebSocket gracefully (a close frame injected at a frame boundary),
//! and tell data from ping/pong for `inactive_timeout`.

/// Longest WebSocket frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
const MAX_HEADER: usize = 14;
const OPCODE_CLOSE: u8 = 0x8;

/// Follows the frame structure of one direction of a WebSocket.
#[derive(Debug, Default)]
pub(crate) struct FrameTracker {
    header: [u8; MAX_HEADER],
    header_len: u8,
    payload_left: u64,
    in_data_frame: bool,
    lost: bool,
}

/// What a chunk of bytes held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Some of the bytes belonged to a data frame (text, binary, continuation): application activity.
    pub(crate) data: bool,
    /// A close frame header went by: this side started (or answered) the closing handshake.
    pub(crate) close: bool,
}

impl FrameTracker {
    /// True between frames, where a frame may be inserted without corrupting the stream. Never true again
    /// once the stream stopped looking like WebSocket frames (every byte then counts as data).
    pub(crate) fn at_boundary(&self) -> bool {
        !self.lost && self.header_len == 0 && self.payload_left == 0
    }

    /// Follows `bytes` through the frame structure. With `stop_at_boundary`, stops right after the first
    /// frame that ends (or at once if already between frames) and returns how many bytes it took, so a caller
    /// can forward exactly up to a boundary; otherwise takes everything.
    pub(crate) fn advance(&mut self, bytes: &[u8], stop_at_boundary: bool) -> (usize, Seen) {
        let mut seen = Seen::default();
        let mut at = 0;
        while at < bytes.len() {
            if stop_at_boundary && self.at_boundary() {
                break;
            }
            if self.lost {
                seen.data = true;
                at = bytes.len();
                break;
            }
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - at);
                self.payload_left -= take as u64;
                seen.data |= self.in_data_frame;
                at += take;
                continue;
            }
            let need = self.header_needed();
            let have = usize::from(self.header_len);
            let take = (need - have).min(bytes.len() - at);
            self.header[have..have + take].copy_from_slice(&bytes[at..at + take]);
            self.header_len += take as u8;
            at += take;
            if usize::from(self.header_len) == self.header_needed() {
                self.finish_header(&mut seen);
            }
        }
        (at, seen)
    }

    /// Header bytes needed given what has arrived so far (the second byte tells the full length).
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let b1 = self.header[1];
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn finish_header(&mut self, seen: &mut Seen) {
        let opcode = self.header[0] & 0x0f;
        let payload_len = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(be)
            }
            short => u64::from(short),
        };
        let is_control = opcode & 0x8 != 0;
        if payload_len >> 63 != 0 || (is_control && payload_len > 125) || matches!(opcode, 3..=7 | 11..) {
            self.lost = true;
            seen.data = true;
            return;
        }
        self.in_data_frame = !is_control;
        seen.data |= self.in_data_frame;
        seen.close |= opcode == OPCODE_CLOSE;
        self.payload_left = payload_len;
        self.header_len = 0;
    }
}

/// A close frame with `code` and a short `reason`, masked when it is sent to a server (RFC 6455 §5.3
/// requires client-to-server frames to be masked).
pub(crate) fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | OPCODE_CLOSE);
    let len = payload.len() as u8;
    match mask {
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
    }
    frame
}

#[cfg(test)]
pub(crate) mod tests;
