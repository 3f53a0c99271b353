//! The CLI's verbs, one file each.

pub mod version;
