//! trustform: rotate the certificate authorities of Kubernetes clusters the way
//! Terraform changes infrastructure: observe → diff → plan → apply.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod cli;
pub mod config;
pub mod diff;
pub mod layout;
pub mod observe;
pub mod pki;
pub mod plan;
pub mod procedure;
pub mod render;
pub mod sandbox;
pub mod snapshot;
