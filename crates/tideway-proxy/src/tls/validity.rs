//! When a certificate stops being valid: its `notAfter`, read straight from the DER of the X.509
//! certificate (RFC 5280 §4.1), for the expiry metric and for refusing an expired certificate before any
//! client sees it.

/// DER tags met on the way to the validity.
const SEQUENCE: u8 = 0x30;
const CONTEXT_0: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter`, in seconds since the Unix epoch; `None` if the DER is not a certificate.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&CONTEXT_0) {
        rest = skip(rest)?; // version
    }
    rest = skip(rest)?; // serialNumber
    rest = skip(rest)?; // signature
    rest = skip(rest)?; // issuer
    let (validity, _) = element(rest, SEQUENCE)?;
    let after = skip(validity)?; // notBefore
    let tag = *after.first()?;
    let (time, _) = element(after, tag)?;
    match tag {
        UTC_TIME => utc_time(time),
        GENERALIZED_TIME => generalized_time(time),
        _ => None,
    }
}

/// The contents of the element at the start of `der` if it has `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = der.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (len, after) = rest.split_at(octets);
        rest = after;
        len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// What follows the element at the start of `der`, whatever its tag.
fn skip(der: &[u8]) -> Option<&[u8]> {
    element(der, *der.first()?).map(|(_, rest)| rest)
}

/// `YYMMDDHHMMSSZ`; years 50–99 are 19xx (RFC 5280 §4.1.2.5.1).
fn utc_time(time: &[u8]) -> Option<i64> {
    let (year, rest) = time.split_at_checked(2)?;
    let year = digits(year)?;
    seconds(if year >= 50 { 1900 + year } else { 2000 + year }, rest)
}

/// `YYYYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.2).
fn generalized_time(time: &[u8]) -> Option<i64> {
    let (year, rest) = time.split_at_checked(4)?;
    seconds(digits(year)?, rest)
}

/// Seconds since the epoch of `year` and `MMDDHHMMSSZ`.
fn seconds(year: i64, rest: &[u8]) -> Option<i64> {
    if rest.len() != 11 || rest[10] != b'Z' {
        return None;
    }
    let field = |at: usize| digits(&rest[at..at + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (the well-known era-based conversion).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
        assert_eq!(utc_time(b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(utc_time(b"700101000000Z"), Some(0));
        assert_eq!(generalized_time(b"20991231000000Z"), Some(4_102_358_400));
    }

    #[test]
    fn malformed_times_are_not_read() {
        for bad in [
            &b"701301000000Z"[..],
            b"70010100000Z",
            b"7001010000000",
            b"70a101000000Z",
        ] {
            assert_eq!(utc_time(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_validity_of_generated_certificates_is_read() {
        for (expires, expected) in [
            (rcgen::date_time_ymd(2031, 7, 4), 1_940_889_600),
            (rcgen::date_time_ymd(2051, 1, 1), 2_556_144_000),
            (rcgen::date_time_ymd(1999, 12, 31), 946_598_400),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).expect("params");
            params.not_after = expires;
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("certificate");
            assert_eq!(not_after(cert.der()), Some(expected));
        }
    }

    #[test]
    fn truncated_or_foreign_der_is_not_a_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).expect("params");
        let der = params.self_signed(&key).expect("certificate").der().to_vec();
        for cut in [0, 1, 10, 100, der.len() / 2] {
            assert_eq!(not_after(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(not_after(key.serialized_der()), None);
    }
}
