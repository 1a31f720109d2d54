//! The integration tests, one binary (one link, and tests that wait on processes overlap
//! with those that compute): each module is one area, named after what it tests. The
//! fuzzer stays its own binary (`tests/fuzz.rs`): it installs a process-wide panic hook.

mod common;

mod apiserver;
mod apply;
mod apply_output;
mod architecture;
mod book;
mod continuity;
mod controllers;
mod csr;
mod demo;
mod errors;
mod etcd;
mod expiry;
mod health;
mod kill;
mod kube;
mod kube_output;
mod kubeadm;
mod live;
mod manual;
mod openssl_layout;
mod plan;
mod preflight;
mod probe;
mod properties;
mod redaction;
mod rehearse;
mod renew;
mod review;
mod safety;
mod sandbox;
mod sandbox_node;
mod schemas;
mod secrets;
mod service_account;
mod ssh;
mod tokens;
