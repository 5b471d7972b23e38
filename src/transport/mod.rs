//! Transports: how homelab reaches a node's runtime root. `local` reads and writes a folder
//! on this machine (the node itself, or a stand-in for every node with `--root DIR`).

pub mod local;
