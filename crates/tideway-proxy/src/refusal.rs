//! A request tideway answers itself, whichever protocol it came by and wherever it was refused: a head
//! the parser will not take, a request no app serves, a connection no replica could seat.

use http::StatusCode;

/// The status tideway answers with, and a line for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The status of the answer.
    pub(crate) status: StatusCode,
    /// A line for the client.
    pub(crate) text: &'static str,
}

impl Refusal {
    /// A `400` saying what is wrong with the request.
    pub(crate) const fn bad(text: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            text,
        }
    }
}
