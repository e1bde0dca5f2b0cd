//! berth's manifest API: the object kinds a user writes (`v1` Pod, ConfigMap,
//! Secret; `berth/v1` Image, Registry), parsing with source positions,
//! validation a user can act on, and JSON Schema generation.
//!
//! This crate does no I/O: callers hand it bytes and a path to name in
//! diagnostics. The agent's directory source and `berth validate` both go
//! through [`parse_file`], so what the agent applies is exactly what
//! `validate` accepts.
//!
//! # The API in five calls
//!
//! - [`classify_path`]`(relative_path)` — is this file under the manifest
//!   directory a manifest ([`ManifestFile::Yaml`] / [`ManifestFile::Json`]),
//!   a `certs.d/<host>/hosts.toml` ([`ManifestFile::HostsToml`]), or
//!   ignored (`None`: hidden files, editor leftovers, other extensions)?
//!   Refuse files over [`MAX_FILE_BYTES`] before reading them whole if you
//!   like; [`parse_file`] refuses them too.
//! - [`parse_file`]`(path, bytes)` → [`ParsedFile`]: every document with its
//!   start position, its [`Object`] when valid, its [`ObjectKey`] when
//!   readable, and its [`Diagnostic`]s (errors and warnings, each with
//!   file:line:column). One bad document never hides the others.
//! - [`parse_hosts_toml`]`(path, host, bytes)` → the same [`ParsedFile`]
//!   shape, holding one [`types::Registry`] object named `host`.
//! - [`find_conflicts`]`(files)` — the same key defined twice: a conflict
//!   diagnostic on both definitions; the earlier file (in the order given)
//!   keeps the object.
//! - [`reference::ImageReference::parse`] — docker-compatible image
//!   reference normalisation.
//!
//! [`Object::canonical_json`] / [`Object::content_hash`] detect changes;
//! [`Object::redacted`] is the form to print (Secret values hidden).
//! [`schema::all_schemas`] is what `berth schema` writes.

pub mod conflicts;
pub mod diag;
pub(crate) mod fields;
pub mod files;
pub mod hosts;
pub mod names;
pub mod object;
pub mod parse;
pub mod quantity;
pub mod reference;
pub mod schema;
pub mod types;
pub(crate) mod validate;

pub use conflicts::find_conflicts;
pub use diag::{Diagnostic, Severity};
pub use files::{MAX_FILE_BYTES, ManifestFile, classify_path, file_too_large};
pub use hosts::parse_hosts_toml;
pub use object::{Kind, Object, ObjectKey};
pub use parse::{Document, ParsedFile, parse_file};
pub use reference::ImageReference;
