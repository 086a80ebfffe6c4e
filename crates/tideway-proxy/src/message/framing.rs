//! Where an HTTP/1.1 message body ends (RFC 9112 §6): relayed bytes are followed through the framing so
//! that the next message on the connection starts exactly where this one stops.

use std::ops::Range;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, forwarded as it is.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// The position of a relay inside a body.
#[derive(Debug)]
pub(crate) struct BodyCursor {
    state: State,
}

/// A chunked body that does not follow RFC 9112 §7.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadChunk;

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body stands. `line` counts the bytes of the size line or trailer field being read,
/// which are bounded so a peer cannot make tideway buffer or scan without end.
#[derive(Debug)]
struct Chunk {
    phase: Phase,
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Hex digits of a chunk size.
    Size,
    /// Right after the size: `;` and extensions, whitespace up to CR, or CR.
    AfterSize,
    /// Whitespace ending a size line, up to CR.
    SizeSpace,
    /// Chunk extensions, up to CR.
    Extension,
    /// LF ending a size line.
    SizeLf,
    /// Chunk data; `size` bytes remain.
    Data,
    /// CR after chunk data.
    DataCr,
    /// LF after chunk data.
    DataLf,
    /// Start of a trailer line (or the final CR).
    TrailerStart,
    /// A trailer field's name, up to its colon.
    TrailerName,
    /// A trailer field's value, up to its CR.
    Trailer,
    /// LF ending a trailer field.
    TrailerLf,
    /// LF ending the message.
    EndLf,
    /// The message ended.
    End,
}

/// Longest chunk-size line (with extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

impl BodyCursor {
    /// The start of a body framed by `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk {
                phase: Phase::Size,
                size: 0,
                digits: 0,
                line: 0,
                trailers: 0,
            }),
            Framing::UntilClose => State::UntilClose,
        };
        BodyCursor { state }
    }

    /// How many body bytes are still to come, when the framing says.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            State::Chunked(_) | State::UntilClose => None,
        }
    }

    /// True once the whole body went by.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes the body's bytes from the front of `input` and returns how many there are; bytes after the
    /// body's end are left for the next message. `payload` receives the ranges of `input` that are content
    /// rather than chunk framing, for a peer that cannot take chunked encoding.
    pub(crate) fn advance(
        &mut self,
        input: &[u8],
        payload: &mut impl FnMut(Range<usize>),
    ) -> Result<usize, BadChunk> {
        match &mut self.state {
            State::Done => Ok(0),
            State::UntilClose => {
                payload(0..input.len());
                Ok(input.len())
            }
            State::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                payload(0..take);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok(take)
            }
            State::Chunked(chunk) => {
                let taken = chunk.advance(input, payload)?;
                if chunk.phase == Phase::End {
                    self.state = State::Done;
                }
                Ok(taken)
            }
        }
    }

    /// The sender closed: fine for a body delimited by the close, a truncation for any other unfinished one.
    pub(crate) fn at_close(&mut self) -> bool {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                true
            }
            State::Length(_) | State::Chunked(_) => false,
        }
    }
}

impl Chunk {
    fn advance(&mut self, input: &[u8], payload: &mut impl FnMut(Range<usize>)) -> Result<usize, BadChunk> {
        let mut at = 0;
        while at < input.len() && self.phase != Phase::End {
            let byte = input[at];
            match self.phase {
                Phase::End => break,
                Phase::Data => {
                    let take =
                        usize::try_from(self.size).map_or(input.len() - at, |s| s.min(input.len() - at));
                    payload(at..at + take);
                    self.size -= take as u64;
                    at += take;
                    if self.size == 0 {
                        self.phase = Phase::DataCr;
                    }
                    continue;
                }
                Phase::Size => match hex_value(byte) {
                    Some(digit) => {
                        // Leading zeros are fine however many; a size past what a signed 64-bit length
                        // holds (where servers cap a body) is refused rather than read differently.
                        if self.size > (i64::MAX as u64) >> 4 {
                            return Err(BadChunk);
                        }
                        self.size = self.size << 4 | u64::from(digit);
                        self.digits = self.digits.saturating_add(1);
                    }
                    None if self.digits == 0 => return Err(BadChunk),
                    None => {
                        self.phase = Phase::AfterSize;
                        continue;
                    }
                },
                // chunk-size [ ";" ext ] [ whitespace ] CRLF, nothing else (RFC 9112 §7.1.1): a size followed
                // by anything else (`0x40`, `5 zz`, `0_5`) is read differently by different parsers, so it
                // is refused; so is whitespace before `;`, which senders must not generate and strict
                // parsers refuse, since tideway relays the line as it is.
                Phase::AfterSize => match byte {
                    b' ' | b'\t' => self.phase = Phase::SizeSpace,
                    b';' => self.phase = Phase::Extension,
                    b'\r' => self.phase = Phase::SizeLf,
                    _ => return Err(BadChunk),
                },
                Phase::SizeSpace => match byte {
                    b' ' | b'\t' => {}
                    b'\r' => self.phase = Phase::SizeLf,
                    _ => return Err(BadChunk),
                },
                Phase::Extension => match byte {
                    b'\r' => self.phase = Phase::SizeLf,
                    _ if is_field_byte(byte) => {}
                    _ => return Err(BadChunk),
                },
                Phase::SizeLf => {
                    expect(byte, b'\n')?;
                    self.line = 0;
                    self.digits = 0;
                    self.phase = if self.size == 0 {
                        Phase::TrailerStart
                    } else {
                        Phase::Data
                    };
                }
                Phase::DataCr => self.phase = expect(byte, b'\r').map(|()| Phase::DataLf)?,
                Phase::DataLf => self.phase = expect(byte, b'\n').map(|()| Phase::Size)?,
                // Lines end with CRLF only: a peer that also takes a bare LF for a line end would see the
                // message end elsewhere than tideway does.
                // A trailer is a field like any other: a token name, a colon, a value.
                Phase::TrailerStart => {
                    self.phase = match byte {
                        b'\r' => Phase::EndLf,
                        _ if is_token_byte(byte) => Phase::TrailerName,
                        _ => return Err(BadChunk),
                    };
                }
                Phase::TrailerName => match byte {
                    b':' => self.phase = Phase::Trailer,
                    _ if is_token_byte(byte) => {}
                    _ => return Err(BadChunk),
                },
                Phase::Trailer => match byte {
                    b'\r' => self.phase = Phase::TrailerLf,
                    _ if is_field_byte(byte) => {}
                    _ => return Err(BadChunk),
                },
                Phase::TrailerLf => self.phase = expect(byte, b'\n').map(|()| Phase::TrailerStart)?,
                Phase::EndLf => {
                    expect(byte, b'\n')?;
                    self.phase = Phase::End;
                    return Ok(at + 1);
                }
            }
            match self.phase {
                Phase::Size | Phase::AfterSize | Phase::SizeSpace | Phase::Extension | Phase::SizeLf => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE {
                        return Err(BadChunk);
                    }
                }
                Phase::Trailer
                | Phase::TrailerName
                | Phase::TrailerLf
                | Phase::TrailerStart
                | Phase::EndLf => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(BadChunk);
                    }
                }
                Phase::Data | Phase::DataCr | Phase::DataLf | Phase::End => {}
            }
            at += 1;
        }
        Ok(at)
    }
}

/// The framing byte `wanted`, or a malformed body.
fn expect(byte: u8, wanted: u8) -> Result<(), BadChunk> {
    if byte == wanted { Ok(()) } else { Err(BadChunk) }
}

/// A byte a trailer field may hold: visible characters, spaces and tabs, and obs-text; no control bytes.
fn is_field_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= b' ' && byte != 0x7f)
}

/// A byte of a field name (`tchar`, RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
