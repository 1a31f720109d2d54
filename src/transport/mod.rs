//! How trustform reaches a node's files. Today one way: `local`, a directory that is the
//! node's `/` (the node itself, a mounted copy, or a sandbox node). Every node path goes
//! through [`local::resolve`], which confines it to the node's root: `..` and symlinks
//! (absolute ones included, as kubeadm makes `kubelet-client-current.pem`) are resolved
//! inside the root, the way the node itself sees them, never against the operator's `/`.

pub mod local;

pub use local::{PathError, normal, resolve};
