//! clip-train under a real slurm (the single-node cluster `scripts/start-slurm.sh` starts, which
//! `scripts/test.sh` runs first): `srun -N1 -n2` trains from shards; `scancel --signal=USR1`
//! mid-run makes both ranks checkpoint the same step and exit with the requeue status; a second
//! `srun … --resume latest` ends bitwise equal to an uninterrupted run. And the sbatch example
//! runs to completion.
use crate::common::{
    assert_bitwise_equal, cli, free_port, make_shards, resume_latest, succeeds, tempdir,
    wait_for_log, wait_until,
};
use crate::golden::root;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

fn require_slurm() {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false);
    assert!(
        up,
        "no slurm here: run `bash scripts/start-slurm.sh` (scripts/test.sh does)"
    );
}

/// `srun -N1 -n2 --job-name JOB clip-train ARGS`, rank 0's store on a free port.
fn srun(job: &str, args: &[String]) -> Command {
    let mut c = Command::new("srun");
    c.args(["-N1", "-n2", "--job-name", job, "--kill-on-bad-exit=0", BIN])
        .args(args)
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", free_port().to_string())
        .env("CLIP_DIST_TIMEOUT", "120")
        .env("OMP_NUM_THREADS", "1");
    c
}

fn args(shards: &Path, logs: &Path, name: &str) -> Vec<String> {
    let flags = "--dataset-type webdataset --train-num-samples 64 --batch-size 4 --workers 1 \
                 --epochs 4 --model clip_tiny --lr 1e-3 --warmup 4 --local-loss \
                 --gather-with-grad --save-every-n-steps 5 --log-every-n-steps 1 --seed 7";
    let data = format!("{}/{{00000..00003}}.tar", shards.display());
    cli(flags, name, logs, &["--train-data", &data])
}

/// Cancels the slurm jobs `scancel ARGS` names when the test ends, however it ends: a job's
/// processes are slurmd's children, not the test's.
struct Cancel(Vec<String>);

impl Drop for Cancel {
    fn drop(&mut self) {
        let _ = Command::new("scancel")
            .args(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

fn check(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "srun: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn srun_two_ranks_preempted_by_scancel_then_resumed_is_bitwise_the_uninterrupted_run() {
    require_slurm();
    let dir = tempdir("slurm-srun");
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 64, 16, 0);
    let logs = dir.join("logs");
    let job = format!("clip-train-test-{}", std::process::id());
    let _cancel = Cancel(vec!["-n".into(), job.clone()]);

    check(
        &srun(&job, &args(&shards, &logs, "ref")).output().unwrap(),
        0,
    );
    let reference = logs.join("ref/checkpoints/epoch_4.safetensors");
    assert!(reference.exists());

    let child = crate::procs::Guarded::spawn(
        srun(&job, &args(&shards, &logs, "pre"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    wait_for_log(&logs.join("pre"), "Train Epoch: 1 [");
    let ids = Command::new("squeue")
        .args(["-h", "-n", &job, "-o", "%A"])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&ids.stdout).trim().to_string();
    assert!(!id.is_empty() && !id.contains('\n'), "job ids: {id:?}");
    let sc = Command::new("scancel")
        .args(["--signal=USR1", &id])
        .status()
        .unwrap();
    assert!(sc.success());
    let out = child.wait_with_output();
    check(&out, 75);
    // Rank 0 logs the step to out.log, rank 1 to its stderr (tagged "rank 1"): the same step.
    let log = std::fs::read_to_string(logs.join("pre/out.log")).unwrap();
    let step_of = |text: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains("Preemption signal: checkpointed step"))
            .unwrap_or_else(|| panic!("no preemption line in {text}"));
        line.split("step ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let rank1: String = err
        .lines()
        .filter(|l| l.contains("| rank 1 |"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(step_of(&log), step_of(&rank1));

    let resume = resume_latest(&args(&shards, &logs, "pre"));
    check(&srun(&job, &resume).output().unwrap(), 0);
    assert_bitwise_equal(
        &logs.join("pre/checkpoints/epoch_4.safetensors"),
        &reference,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sbatch slurm/local_cpu.sbatch` (the single-node example the README points at) trains to the
/// end: the job leaves the queue and the run's last checkpoint is there.
#[test]
fn sbatch_local_example_completes() {
    require_slurm();
    let dir = tempdir("slurm-sbatch");
    let out = succeeds(
        Command::new("sbatch")
            .args(["--parsable", "-o"])
            .arg(dir.join("job.out"))
            .arg(root().join("slurm/local_cpu.sbatch"))
            .current_dir(root())
            .env("CLIP_TRAIN", BIN)
            .env("LOGS", &dir)
            .env("NAME", "sb"),
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _cancel = Cancel(vec![id.clone()]);
    wait_until(&format!("job {id} to leave the queue"), || {
        let q = Command::new("squeue")
            .args(["-h", "-j", &id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&q.stdout).trim().is_empty()
    });
    let job_out = std::fs::read_to_string(dir.join("job.out")).unwrap_or_default();
    assert!(
        dir.join("sb/checkpoints/epoch_1.safetensors").exists(),
        "{job_out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
