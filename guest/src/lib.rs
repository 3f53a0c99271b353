//! `vmctl-guest`: a Docker-compatible container engine, and (inside the vmctl
//! VM) its PID 1. It also runs standalone on any Linux host.

#![recursion_limit = "256"]

pub mod api;
pub mod build;
pub mod engine;
pub mod image;
pub mod model;
pub mod network;
pub mod runtime;
pub mod state;
pub mod vm;
pub mod volume;
