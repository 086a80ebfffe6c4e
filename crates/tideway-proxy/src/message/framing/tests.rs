use proptest::prelude::*;

use super::*;

/// Feeds `input` to a cursor in pieces of `piece` bytes; returns the bytes taken, the payload, and
/// whether the body ended.
fn feed(framing: Framing, input: &[u8], piece: usize) -> Result<(usize, Vec<u8>, bool), BadChunk> {
    let mut cursor = BodyCursor::new(framing);
    let mut taken = 0;
    let mut payload = Vec::new();
    for part in input.chunks(piece.max(1)) {
        let n = cursor.advance(part, &mut |range| payload.extend_from_slice(&part[range]))?;
        taken += n;
        if n < part.len() {
            break;
        }
    }
    Ok((taken, payload, cursor.is_done()))
}

#[test]
fn a_length_body_ends_at_its_length_and_leaves_the_rest() {
    assert_eq!(
        feed(Framing::Length(5), b"helloGET /", 64),
        Ok((5, b"hello".to_vec(), true))
    );
    assert_eq!(
        feed(Framing::Length(5), b"hel", 64),
        Ok((3, b"hel".to_vec(), false))
    );
    assert!(BodyCursor::new(Framing::Length(0)).is_done());
    assert!(BodyCursor::new(Framing::Empty).is_done());
}

#[test]
fn a_chunked_body_is_followed_to_its_last_chunk_and_trailers() {
    let body = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\nGET /next";
    let end = body.len() - b"GET /next".len();
    for piece in [1, 2, 3, 7, 64] {
        assert_eq!(
            feed(Framing::Chunked, body, piece),
            Ok((end, b"hello world".to_vec(), true)),
            "in pieces of {piece}"
        );
    }
    assert_eq!(
        feed(Framing::Chunked, b"0\r\n\r\n", 64),
        Ok((5, Vec::new(), true))
    );
    assert_eq!(
        feed(Framing::Chunked, b"A\r\n0123456789\r\n", 64),
        Ok((15, b"0123456789".to_vec(), false))
    );
}

#[test]
fn malformed_chunks_are_refused() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"5\nhello\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\rX",
        b"0\r\n\rX",
        b"11111111111111111\r\n",
        // Bare LFs where a peer might see the end of the message.
        b"0\r\n\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"0\r\nX-T: 1\n\r\n",
        b"0\r\nX-T: \x01\r\n\r\n",
        // Trailers are fields: a name, a colon, a value.
        b"0\r\nno colon\r\n\r\n",
        b"0\r\n: no name\r\n\r\n",
        b"0\r\nX T: 1\r\n\r\n",
    ] {
        assert_eq!(
            feed(Framing::Chunked, bad, 64),
            Err(BadChunk),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long_extension = format!("1;{}\r\n", "x".repeat(MAX_SIZE_LINE));
    assert_eq!(
        feed(Framing::Chunked, long_extension.as_bytes(), 64),
        Err(BadChunk)
    );
    let endless_trailers = format!("0\r\n{}", "X-T: 1\r\n".repeat(MAX_TRAILERS / 8 + 1));
    assert_eq!(
        feed(Framing::Chunked, endless_trailers.as_bytes(), 64),
        Err(BadChunk)
    );
}

#[test]
fn a_close_ends_only_bodies_delimited_by_it() {
    let mut until_close = BodyCursor::new(Framing::UntilClose);
    assert_eq!(until_close.advance(b"anything", &mut |_| {}), Ok(8));
    assert!(!until_close.is_done());
    assert!(until_close.at_close());
    assert!(until_close.is_done());
    assert!(!BodyCursor::new(Framing::Length(3)).at_close());
    assert!(!BodyCursor::new(Framing::Chunked).at_close());
}

fn chunked(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

proptest! {
    #[test]
    fn any_chunked_body_decodes_to_its_content_however_it_is_split(
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        piece in 1usize..50,
        next in proptest::collection::vec(any::<u8>(), 0..10),
    ) {
        let mut message = chunked(&parts);
        let end = message.len();
        message.extend_from_slice(&next);
        let (taken, payload, done) = feed(Framing::Chunked, &message, piece).expect("well-formed");
        prop_assert_eq!(taken, end);
        prop_assert_eq!(payload, parts.concat());
        prop_assert!(done);
    }

    #[test]
    fn a_length_body_takes_exactly_its_length(length in 0u64..200, input in proptest::collection::vec(any::<u8>(), 0..300), piece in 1usize..64) {
        let (taken, payload, done) = feed(Framing::Length(length), &input, piece).expect("lengths never fail");
        let expected = (length as usize).min(input.len());
        prop_assert_eq!(taken, expected);
        prop_assert_eq!(&payload[..], &input[..expected]);
        prop_assert_eq!(done, input.len() >= length as usize);
    }
}

#[test]
fn chunk_size_lines_are_parsed_exactly() {
    for line in [
        "0x40",
        "5 zz",
        "0_5",
        "0: 1",
        "+5",
        "-5",
        " 5",
        "5\t\tx",
        "8000000000000000",
        "FFFFFFFFFFFFFFFF",
        "5;a=\u{1}",
        "5;\u{7f}",
        "5\n",
        "5\t;name",
        "5 ;name",
        "5 \t x",
    ] {
        let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            feed(Framing::Chunked, body.as_bytes(), 64),
            Err(BadChunk),
            "{line:?}"
        );
    }
    for (line, size) in [
        ("5", 5usize),
        ("00000000000000000000005", 5),
        ("5 ", 5),
        ("5;name \t", 5),
        ("5;name=value;other=\"quoted value\"", 5),
        ("7fffffffffffffff", usize::MAX),
    ] {
        let data = "x".repeat(size.min(5));
        let body = format!("{line}\r\n{data}");
        let fed = feed(Framing::Chunked, body.as_bytes(), 64);
        assert_eq!(
            fed.map(|(_, payload, _)| payload.len()),
            Ok(size.min(5)),
            "{line:?}"
        );
    }
}
