pub mod config;
pub mod csv_upload;
pub mod domain;
pub mod metrics;
pub mod routing;
