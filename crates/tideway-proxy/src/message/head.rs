//! HTTP/1.1 message heads (RFC 9112): parsed in place with httparse, checked, and rewritten for the next
//! hop in the same pass — no header map, no allocation per field. Requests and responses each have their
//! module; the field readers and the version rule are shared.

mod fields;
mod request;
mod response;
mod version;

pub(crate) use fields::Hop;
pub(crate) use request::{Limits, RequestHead, add_host, parse_request, write_request};
pub(crate) use response::{
    Hsts, ResponseHead, ResponseOut, ResponseRewrite, Said, own_response, parse_response,
};

/// Room in the parser's field table: the largest `max_headers` the configuration accepts.
const FIELD_TABLE: usize = 1000;

#[cfg(test)]
mod tests;
