//! trustform: rotate the certificate authorities of Kubernetes clusters the way
//! Terraform changes infrastructure: observe → diff → plan → apply.
#![forbid(unsafe_code)]
// Diagnostics carry the text they point into (miette's NamedSource + span): large, but
// only on the failure path, where a clear message matters more than a few bytes moved.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod atomic;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_edit;
pub mod csr;
pub mod diff;
pub mod exec;
pub mod expiry;
pub mod held;
pub mod input;
pub mod kubelet;
pub mod layout;
pub mod manifest;
pub mod observe;
pub mod parallel;
pub mod pki;
pub mod plan;
pub mod procedure;
pub mod redact;
pub mod render;
pub mod sandbox;
pub mod schema;
pub mod snapshot;
pub mod transport;
pub mod unique;
pub mod verbosity;
