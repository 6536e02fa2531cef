//! `clip-tool`: utilities around clip-train (convert, embed, tokenize, make-shards, inspect,
//! bench-data, bench-model, bench-optimizer, profile, sim-ranks, flops). Each subcommand lives
//! in `clip_train::tool::<name>`.
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
    /// Webdataset shards from a folder of image+caption pairs or a CSV/TSV.
    MakeShards(tool::make_shards::Args),
    /// JSON summary of shards from any source (files, pipe:, s3://).
    Inspect(tool::inspect::Args),
    /// Images/s of the full training input pipeline (last line of the output).
    BenchData(tool::bench_data::Args),
    /// Seconds per forward+backward step and peak memory of a model (JSON last line).
    BenchModel(tool::bench_model::Args),
    /// Seconds per AdamW step over a model's parameters, fused or the per-tensor loop (JSON).
    BenchOptimizer(tool::bench_optimizer::Args),
    /// Ops, host syncs and time per phase of a `--profile-steps` trace.
    Profile(tool::profile::Args),
    /// The trainer's control path for W simulated ranks (threads) against the real store:
    /// store requests, bytes and CPU per step, step time, per kind of step.
    SimRanks(tool::sim_ranks::Args),
    /// A model's FLOPs per sample (forward; trained, without and with recompute), as JSON.
    Flops(tool::flops::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => tool::embed::run(a),
        Command::Tokenize(a) => tool::tokenize::run(a),
        Command::Convert(a) => tool::convert::run(a),
        Command::MakeShards(a) => tool::make_shards::run(a),
        Command::Inspect(a) => tool::inspect::run(a),
        Command::BenchData(a) => tool::bench_data::run(a),
        Command::BenchModel(a) => tool::bench_model::run(a),
        Command::BenchOptimizer(a) => tool::bench_optimizer::run(a),
        Command::Profile(a) => tool::profile::run(a),
        Command::SimRanks(a) => tool::sim_ranks::run(a),
        Command::Flops(a) => tool::flops::run(a),
    };
    if let Err(e) = result {
        // One line, no backtrace: the chain of contexts joined, culprit first.
        eprintln!("clip-tool: error: {e:#}");
        std::process::exit(1);
    }
}
