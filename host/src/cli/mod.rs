//! The CLI's verbs, one file each: the machine verbs under [`machine`], the
//! container verbs ([`container`]) over bollard, and what they share.

pub mod container;
pub mod engine;
pub mod error;
pub mod exec;
pub mod format;
pub mod images;
pub mod load;
pub mod logs;
pub mod machine;
pub mod port;
pub mod ps;
pub mod pull;
pub mod rm;
pub mod run;
pub mod stop;
pub mod stream;
pub mod terminal;
pub mod version;
