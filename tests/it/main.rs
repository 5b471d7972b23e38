//! The one integration test binary: each module drives the real `homelab` binary against
//! fixture homelab trees copied into a temporary folder.

mod lab;
mod support;

mod agent;
mod apply;
mod approve;
mod architecture;
mod bootstrap;
mod cli;
mod corpus;
mod corpus_import;
mod events;
mod executor;
mod forge;
mod forge_standin;
mod graph;
mod import;
mod lab_smoke;
mod observe;
mod plan;
mod render;
mod signers;
mod signing;
mod supervise;
mod telegram;
mod telegram_standin;
mod ui;
mod validate;
mod webdriver;
