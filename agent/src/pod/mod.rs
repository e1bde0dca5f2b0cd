//! Pods, driven the kubelet's way.
//!
//! - [`workers`]: one task per pod owns its slow work (pulls, starts,
//!   graceful stops, hooks, restarts after a back-off); the controller only
//!   hands each pod its newest desired state. A newer version cancels a
//!   sync in flight; [`limits`] bound how many pods pull, start and stop
//!   at once.
//! - [`sync`]: one sync of a pod — observe, plan ([`plan`], a pure function
//!   from the desired and the observed pod to [`plan::PodActions`]), act,
//!   until nothing is left to do now; then [`report`] its status.
//! - The acting goes through [`host`]: traits for the runtime, sandboxes,
//!   images, networks, records, probes, exits, handlers, events, status
//!   and the clock, implemented by the real services and by fakes in the
//!   unit tests ([`fake`]). [`executor`] bundles them for one pod.
//! - A pod's life: images first (before anything stops); an *incarnation*
//!   (a uid) with its network and sandbox ([`sandbox`], [`network`]); a
//!   pod-level change ([`hash`]) makes a new incarnation and tears the old
//!   one down ([`teardown`]); init containers one at a time, then app
//!   containers ([`containers`]), each restarted by the restart policy with
//!   kubelet's CrashLoopBackOff ([`config`]) and replaced alone when only
//!   its own spec changed; exits arrive without polling ([`exits`]); probes
//!   run as tasks ([`probes`], running [`handlers`]); lifecycle hooks run
//!   at start and before every stop ([`hooks`]).
//!
//! Crash safety: the pod's record ([`state`]) is written before every
//! action it describes; [`recover`] runs once at agent start to adopt what
//! runs and remove what belongs to no pod. Errors carry a Kubernetes reason
//! ([`error`]).

pub mod action;
pub mod autoupdate;
pub mod config;
pub mod containers;
pub mod error;
pub mod eviction;
pub mod executor;
pub mod exits;
#[cfg(test)]
mod fake;
pub mod grpc_health;
pub mod handlers;
pub mod hash;
pub mod hooks;
pub mod host;
pub mod inputs;
pub mod limits;
pub mod network;
pub mod plan;
pub mod probes;
pub mod projection;
pub mod recover;
pub mod report;
pub mod rollout;
pub mod sandbox;
pub mod state;
pub mod storage;
pub mod sync;
pub mod teardown;
#[cfg(test)]
mod tests;
pub mod update;
pub mod versions;
pub mod workers;

pub use config::PodsConfig;
