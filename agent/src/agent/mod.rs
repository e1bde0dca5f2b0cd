//! `berth run`: the agent process. Wires the directory source, the desired
//! store, the controller with its reconcilers, and status persistence, and
//! handles signals, readiness and the single-instance lock.

pub mod layout;
pub mod lock;
pub mod logging;
