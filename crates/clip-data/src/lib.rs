pub mod buffers;
pub mod csv;
pub mod hf_tokenizer;
pub mod inspect;
pub mod loader;
pub mod make_shards;
pub mod order;
pub mod processor;
pub mod pyliteral;
pub mod rebalance;
pub mod s3;
pub mod samples;
pub mod shards;
pub mod source;
pub mod tokenizer;
pub mod transform;

pub use loader::LoaderError;
