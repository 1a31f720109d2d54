//! The sandbox's HTTPS Kubernetes API server: the object store, the registry of served
//! resources, and (in later modules) TLS with client certificates, discovery and the verbs.

pub mod ids;
pub mod resources;
pub mod store;

pub use store::{Event, EventKind, Store, StoreError};
