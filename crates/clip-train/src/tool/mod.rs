//! clip-tool's subcommands, one file each.
pub mod convert;
pub mod embed;
pub mod tokenize;
