
pub mod tokenizer;
pub mod transform;
pub mod shards;
pub mod source;
pub mod s3;
pub mod samples;
pub mod order;
pub mod loader;
pub mod make_shards;
pub mod inspect;
pub mod processor;
