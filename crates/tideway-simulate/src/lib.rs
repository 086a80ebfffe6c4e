//! `tideway simulate`: connection traces (recorded by `[proxy] trace_log`, or synthetic) replayed
//! against candidate scaling policies in virtual time, through the same core code that runs in
//! production, with the ideal rule beside them for reference. Pure: the binary reads and writes files.

mod engine;
mod figures;
mod plot;
mod report;
mod synthetic;
mod trace;

pub use engine::{Startup, replay};
pub use figures::{Figures, Sample, ideal};
pub use plot::svg;
pub use report::{Candidate, Outcome, Report, simulate};
pub use synthetic::{SYNTHETIC_APP, Shape};
pub use trace::{Arrival, Kind, TRACE_VERSION, Trace, TraceError};

#[cfg(test)]
mod tests;
