//! Integration tests of the object store, one binary with a module per area so that they
//! link once.

mod batches;
mod buckets;
mod concurrency;
mod crash;
mod keys;
mod listing;
mod objects;
mod ranges;
mod s3;
mod support;
