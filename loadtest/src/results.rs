//! The results file every run writes. Its schema lives in `reports`, which
//! reads it back; loadtest only fills it in.

pub use reports::results::*;
