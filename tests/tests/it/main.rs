//! Every integration test in one binary: each file of `tests/` as its own crate would link the
//! whole SDK again (eleven times), and most of a clean `make test` would be spent linking.

mod alarms;
mod aws_like;
mod bad_input;
mod discovery;
mod faults;
mod foundation;
mod groups;
mod infra;
mod install;
mod quotas;
mod races;
mod release;
mod retry;
mod shift;
mod ssm;
mod teardown;
mod trace;
