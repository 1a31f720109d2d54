//! `apply`: carry out a plan step by step through `exec`, journaled and resumable.
//! `walk` runs the DAG; `act` does one step's operations; `gate` verifies trust between
//! stages (handshaking live with every endpoint through `live`), and `logscan` reads the components' logs for TLS errors at each gate;
//! `manual` pauses at the steps the operator carries out; `journal`, `lock`, `progress`
//! and `status` keep the operator informed; `material` holds the CA certificates and keys the steps write; `tls` resolves
//! credentials as their holders hold them; `quorum` keeps etcd whole around a member's restart; `preflight` checks everything it can before
//! the first write; `prepare` holds what an apply sets up before its walk.

pub mod act;
pub mod cluster_lock;
pub mod endpoints;
pub mod error;
pub mod gate;
pub mod journal;
pub mod live;
pub mod lock;
pub mod logscan;
pub mod manual;
pub mod material;
pub mod preflight;
pub mod prepare;
pub mod probe;
pub mod progress;
pub mod quorum;
pub mod status;
pub mod tls;
pub mod walk;

pub use walk::{Ask, Fault, RunResult, World, walk};
