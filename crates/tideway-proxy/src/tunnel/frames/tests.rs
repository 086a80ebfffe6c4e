use proptest::prelude::*;

use super::*;

/// Encodes a frame the way a peer would (server frames unmasked, client frames masked).
pub(crate) fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[test]
fn whole_frames_leave_the_tracker_at_a_boundary() {
    let mut t = FrameTracker::default();
    let bytes = frame(0x1, true, b"hello", None);
    assert_eq!(
        t.advance(&bytes, false),
        (
            bytes.len(),
            Seen {
                data: true,
                close: false
            }
        )
    );
    assert!(t.at_boundary());
}

#[test]
fn ping_and_pong_are_not_activity() {
    let mut t = FrameTracker::default();
    let mut bytes = frame(0x9, true, b"are you there", Some([1, 2, 3, 4]));
    bytes.extend(frame(0xA, true, b"", None));
    assert_eq!(t.advance(&bytes, false).1, Seen::default());
    assert!(t.at_boundary());
}

#[test]
fn close_frames_are_reported() {
    let mut t = FrameTracker::default();
    let bytes = frame(0x8, true, &1000u16.to_be_bytes(), Some([9, 9, 9, 9]));
    assert_eq!(
        t.advance(&bytes, false).1,
        Seen {
            data: false,
            close: true
        }
    );
}

#[test]
fn a_frame_split_anywhere_is_followed() {
    let payload = vec![7u8; 70_000];
    let bytes = frame(0x2, true, &payload, Some([1, 2, 3, 4]));
    for split in [1, 2, 3, 9, 13, 14, 15, 1000, bytes.len() - 1] {
        let mut t = FrameTracker::default();
        t.advance(&bytes[..split], false);
        assert!(!t.at_boundary(), "split at {split}");
        t.advance(&bytes[split..], false);
        assert!(t.at_boundary(), "split at {split}");
    }
}

#[test]
fn stop_at_boundary_takes_exactly_the_rest_of_the_current_frame() {
    let first = frame(0x1, false, b"part one", None);
    let second = frame(0x0, true, b"part two", None);
    let mut stream = first.clone();
    stream.extend_from_slice(&second);
    let mut t = FrameTracker::default();
    t.advance(&stream[..3], false);
    let (taken, seen) = t.advance(&stream[3..], true);
    assert_eq!(taken, first.len() - 3);
    assert!(seen.data);
    assert!(t.at_boundary());
    assert_eq!(
        t.advance(&stream[first.len()..], true).0,
        0,
        "already at a boundary"
    );
}

#[test]
fn garbage_stops_tracking_for_good() {
    let mut t = FrameTracker::default();
    // Reserved opcode 0x3.
    let (taken, seen) = t.advance(&[0x83, 0x00, 1, 2, 3], false);
    assert_eq!(taken, 5);
    assert!(seen.data);
    assert!(!t.at_boundary());
    let valid = frame(0x1, true, b"late", None);
    assert_eq!(
        t.advance(&valid, false).1,
        Seen {
            data: true,
            close: false
        }
    );
    assert!(!t.at_boundary(), "once lost, never at a boundary again");
    // A control frame longer than 125 bytes is not WebSocket either.
    let mut t = FrameTracker::default();
    t.advance(&[0x89, 126, 0, 200], false);
    assert!(!t.at_boundary());
}

#[test]
fn injected_close_frames_parse_as_close_frames() {
    for mask in [None, Some([0xde, 0xad, 0xbe, 0xef])] {
        let bytes = close_frame(1001, "max_age", mask);
        let mut t = FrameTracker::default();
        assert_eq!(
            t.advance(&bytes, false),
            (
                bytes.len(),
                Seen {
                    data: false,
                    close: true
                }
            )
        );
        assert!(t.at_boundary());
        let payload_at = if mask.is_some() { 6 } else { 2 };
        let key = mask.unwrap_or([0; 4]);
        let payload: Vec<u8> = bytes[payload_at..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert_eq!(&payload[2..], b"max_age");
    }
}

proptest! {
    /// Any sequence of frames, cut into any chunks: the tracker is between frames exactly at frame ends,
    /// reports activity exactly when a data frame went by, and stopping at a boundary from anywhere inside a
    /// frame lands on that frame's end.
    #[test]
    fn boundaries_match_frame_ends(
        frames in prop::collection::vec(
            (prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]), 0usize..300, any::<bool>()),
            1..20,
        ),
        cuts in prop::collection::vec(1usize..400, 1..40),
        stop_from in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        let mut any_data = false;
        for (opcode, len, masked) in &frames {
            let len = if *opcode >= 8 { len % 126 } else { *len };
            any_data |= *opcode < 8;
            stream.extend(frame(*opcode, true, &vec![0xAB; len], masked.then_some([4, 3, 2, 1])));
            ends.push(stream.len());
        }

        let mut t = FrameTracker::default();
        let mut at = 0;
        let mut seen_data = false;
        for cut in cuts.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let end = (at + cut).min(stream.len());
            let (taken, seen) = t.advance(&stream[at..end], false);
            prop_assert_eq!(taken, end - at);
            seen_data |= seen.data;
            prop_assert_eq!(t.at_boundary(), ends.contains(&end));
            at = end;
        }
        prop_assert_eq!(seen_data, any_data);

        let from = stop_from.index(stream.len());
        let mut t = FrameTracker::default();
        t.advance(&stream[..from], false);
        let (taken, _) = t.advance(&stream[from..], true);
        let expected = if ends.contains(&from) || from == 0 {
            from
        } else {
            *ends.iter().find(|e| **e > from).expect("a frame ends after any inner position")
        };
        prop_assert_eq!(from + taken, expected);
        prop_assert!(t.at_boundary());
    }
}
