//! The one integration test binary: each module drives the real `homelab` binary against
//! fixture homelab trees copied into a temporary folder.

mod support;

mod cli;
mod graph;
mod render;
mod signing;
mod validate;
