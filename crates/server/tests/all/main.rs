//! Integration tests of `zvm-server`: each starts the real server in-process on a loopback
//! port with its own data directory and talks HTTP to it. One binary, one module per area.

mod endpoints;
mod guests;
mod handlers;
mod isolation;
mod jobs;
mod objects;
mod openapi;
mod ops;
mod runs;
mod s3;
mod support;
mod tenants;
mod timeouts;
mod ui;
mod zapps;
