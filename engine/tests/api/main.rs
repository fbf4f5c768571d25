//! Integration tests against the real local stack (LocalStack, dynoxide and
//! aws-ses-v2-local as host processes), started once for the whole binary.

mod helpers;

mod api_key;
mod campaign;
mod delivery;
mod faults;
mod graphql;
mod hostile;
mod mailers;
mod provisioning;
mod status_store;
mod upload_limits;
