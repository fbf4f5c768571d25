//! Placeholder: see README "Status".
