//! Comparing a presented secret with the expected one.

/// Equality of a presented secret with the expected one that takes as long whatever the presented one is:
/// every byte of the expected secret is compared, even past a wrong length.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let length_differs = u8::from(presented.len() != expected.len());
    let diff = expected
        .iter()
        .enumerate()
        .fold(length_differs, |diff, (i, byte)| {
            diff | (byte ^ presented.get(i).copied().unwrap_or(!byte))
        });
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret-and-more", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre\xff", b"s3cre"));
    }
}
