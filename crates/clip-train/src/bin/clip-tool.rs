//! `clip-tool`: utilities around clip-train (convert, embed, tokenize, make-shards, inspect,
//! bench-data). Each subcommand lives in `clip_train::tool::<name>`.
use clap::{Parser, Subcommand};
use clip_train::tool;

#[derive(Parser)]
#[command(name = "clip-tool", version, about = "Utilities around clip-train")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Image and/or text features exactly as OpenCLIP's encode_image / encode_text return them.
    Embed(tool::embed::Args),
    /// Token ids (a JSON array of arrays) as OpenCLIP's tokenizer gives them.
    Tokenize(tool::tokenize::Args),
    /// Any checkpoint clip-train reads → OpenCLIP-keyed safetensors.
    Convert(tool::convert::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => tool::embed::run(a),
        Command::Tokenize(a) => tool::tokenize::run(a),
        Command::Convert(a) => tool::convert::run(a),
    };
    if let Err(e) = result {
        // One line, no backtrace: the chain of contexts joined, culprit first.
        eprintln!("clip-tool: error: {e:#}");
        std::process::exit(1);
    }
}
