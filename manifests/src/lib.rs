//! berth's manifest API: the object kinds a user writes (`v1` Pod, ConfigMap,
//! Secret; `berth/v1` Image, Registry), parsing with source positions,
//! validation a user can act on, and JSON Schema generation.
//!
//! This crate does no I/O: callers hand it bytes and a path to name in
//! diagnostics. The agent's directory source and `berth validate` both go
//! through [`parse_file`], so what the agent applies is exactly what
//! `validate` accepts.

pub mod diag;
pub mod object;

pub use diag::{Diagnostic, Severity};
pub use object::{Kind, ObjectKey};
