//! The CLI's verbs, one file each.

pub mod machine;
pub mod version;
