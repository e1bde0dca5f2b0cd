//! Pods: the reconciler that makes them run, and keeps them running.
//!
//! A pod's life (see [`lifecycle`] for one reconcile):
//! 1. images first, through the image manager, before anything stops;
//! 2. an *incarnation* (a uid): the network from the driver
//!    ([`network`]), the runtime's sandbox and the volumes ([`sandbox`]);
//!    a pod-level change ([`hash`]) makes a new incarnation and tears the
//!    old one down ([`teardown`]);
//! 3. init containers one at a time, then app containers, each restarted
//!    by the restart policy with kubelet's CrashLoopBackOff ([`plan`],
//!    [`backoff`]) and replaced alone when only its own spec changed;
//! 4. exits arrive without polling ([`exits`]); probes run as tasks and
//!    report through the same channel ([`probes`], running [`handlers`]);
//!    lifecycle hooks run at start and before every stop ([`hooks`]);
//!    status is [`report`]ed in the shape `berth ps` prints.
//!
//! Crash safety: the pod's record ([`state`]) is written before every
//! action it describes; [`recover`] runs once at agent start to adopt what
//! runs and remove what belongs to no pod.

pub mod backoff;
pub mod containers;
pub mod exits;
pub mod handlers;
pub mod hash;
pub mod hooks;
pub mod inputs;
pub mod lifecycle;
pub mod network;
pub mod plan;
pub mod probes;
pub mod recover;
pub mod report;
pub mod sandbox;
pub mod state;
pub mod teardown;

pub use backoff::PodsConfig;
