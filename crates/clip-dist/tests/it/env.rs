//! OpenCLIP's rank / world-size environment precedence (`world_info_from_env`,
//! `is_using_distributed`), `--dist-url` and the timeout variable, without touching the
//! process environment.

use clip_dist::{
    is_using_distributed_with, master_from_env, parse_dist_url, timeout_from_env, Error, Fault,
    InitOptions, WorldInfo, LOCAL_RANK_VARS, RANK_VARS, WORLD_SIZE_VARS,
};
use std::collections::HashMap;
use std::time::Duration;

/// Every launch mistake is a [`Error::Config`], which a launcher ends with exit status 2.
fn assert_config(e: &Error) {
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert_eq!(e.fault(), Fault::Launch);
    assert_eq!(e.fault().exit_status(), 2);
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults_without_a_launcher() {
    assert_eq!(
        WorldInfo::from_lookup(lookup(&[])).unwrap(),
        WorldInfo {
            rank: 0,
            local_rank: 0,
            world_size: 1
        }
    );
    assert!(!is_using_distributed_with(lookup(&[])).unwrap());
}

#[test]
fn each_family_alone() {
    // torchrun, MPI/PMI (Intel MPI's local id), slurm, Open MPI.
    let families = [
        ("LOCAL_RANK", "RANK", "WORLD_SIZE"),
        ("MPI_LOCALRANKID", "PMI_RANK", "PMI_SIZE"),
        ("SLURM_LOCALID", "SLURM_PROCID", "SLURM_NTASKS"),
        (
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
        ),
    ];
    for (local, rank, world) in families {
        let info =
            WorldInfo::from_lookup(lookup(&[(local, "1"), (rank, "5"), (world, "8")])).unwrap();
        assert_eq!(
            info,
            WorldInfo {
                rank: 5,
                local_rank: 1,
                world_size: 8
            },
            "{local} {rank} {world}"
        );
    }
}

#[test]
fn earlier_variables_win() {
    // Every variable of every family set to a different value: the first of each list wins.
    for lists in [&LOCAL_RANK_VARS, &RANK_VARS, &WORLD_SIZE_VARS] {
        for winner in 0..4 {
            let mut vars: Vec<(&str, String)> = lists[winner..]
                .iter()
                .enumerate()
                .map(|(i, v)| (*v, (winner + i + 2).to_string()))
                .collect();
            // Keep rank < world: make the world large unless we are testing it.
            if !std::ptr::eq(lists, &WORLD_SIZE_VARS) {
                vars.push(("WORLD_SIZE", "100".to_string()));
            }
            let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let info = WorldInfo::from_lookup(lookup(&pairs)).unwrap();
            let got = if std::ptr::eq(lists, &LOCAL_RANK_VARS) {
                info.local_rank
            } else if std::ptr::eq(lists, &RANK_VARS) {
                info.rank
            } else {
                info.world_size
            };
            assert_eq!(got, winner + 2, "{:?} from {}", lists, lists[winner]);
        }
    }
}

#[test]
fn bad_values_name_the_variable() {
    let e = WorldInfo::from_lookup(lookup(&[("SLURM_PROCID", "x1")])).unwrap_err();
    assert!(e.to_string().contains("SLURM_PROCID=\"x1\""), "{e}");
    assert_config(&e);
    let e = WorldInfo::from_lookup(lookup(&[("RANK", "3"), ("WORLD_SIZE", "2")])).unwrap_err();
    assert!(e.to_string().contains("rank 3"), "{e}");
    assert_config(&e);
    let e = WorldInfo::from_lookup(lookup(&[("WORLD_SIZE", "0")])).unwrap_err();
    assert_config(&e);
    let e = is_using_distributed_with(lookup(&[("WORLD_SIZE", "two")])).unwrap_err();
    assert!(e.to_string().contains("WORLD_SIZE"), "{e}");
    assert_config(&e);
}

#[test]
fn using_distributed_as_openclip() {
    let on = |vars: &[(&str, &str)]| is_using_distributed_with(lookup(vars)).unwrap();
    assert!(on(&[("WORLD_SIZE", "2")]));
    assert!(!on(&[("WORLD_SIZE", "1"), ("SLURM_NTASKS", "4")])); // WORLD_SIZE decides
    assert!(on(&[("SLURM_NTASKS", "4")]));
    assert!(!on(&[("SLURM_NTASKS", "1")]));
    assert!(!on(&[("PMI_SIZE", "4"), ("OMPI_COMM_WORLD_SIZE", "4")])); // horovod's, not DDP
}

#[test]
fn dist_url_and_master() {
    assert_eq!(parse_dist_url("env://").unwrap(), None);
    assert_eq!(
        parse_dist_url("tcp://node-1:23456").unwrap(),
        Some(("node-1".to_string(), 23456))
    );
    assert_eq!(
        parse_dist_url("tcp://[::1]:99").unwrap(),
        Some(("::1".to_string(), 99))
    );
    for bad in [
        "file:///tmp/x",
        "tcp://host",
        "tcp://:1",
        "tcp://h:http",
        "tcp://h:0",
    ] {
        let e = parse_dist_url(bad).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("--dist-url {bad:?}")),
            "{e}"
        );
        assert_config(&e);
    }
    let env = lookup(&[("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")]);
    assert_eq!(
        master_from_env(None, &env).unwrap(),
        ("10.0.0.1".to_string(), 29500)
    );
    assert_eq!(
        master_from_env(Some("env://"), &env).unwrap(),
        ("10.0.0.1".to_string(), 29500)
    );
    assert_eq!(
        master_from_env(Some("tcp://a:1"), &env).unwrap(),
        ("a".to_string(), 1)
    );
    let e = master_from_env(None, lookup(&[("MASTER_PORT", "1")])).unwrap_err();
    assert!(e.to_string().contains("MASTER_ADDR"), "{e}");
    assert_config(&e);
    let e = master_from_env(None, lookup(&[("MASTER_ADDR", "h")])).unwrap_err();
    assert!(e.to_string().contains("MASTER_PORT is not set"), "{e}");
    assert_config(&e);
    // A port that is not one, or one the other ranks cannot connect to (0: any free port).
    for (port, why) in [
        ("abc", "invalid digit found in string"),
        ("70000", "number too large to fit in target type"),
        ("0", "port 0 cannot be shared with the other ranks"),
    ] {
        let env = lookup(&[("MASTER_ADDR", "h"), ("MASTER_PORT", port)]);
        let e = master_from_env(None, env).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("MASTER_PORT={port:?} is not a port number: {why}")
        );
        assert_config(&e);
    }
}

#[test]
fn init_options_read_the_address_only_for_several_ranks() {
    // A world of one needs no address; two ranks without one is a launch mistake.
    let one = InitOptions::from_env(
        &WorldInfo::single(),
        Some("env://"),
        clip_dist::Backend::Cpu,
    );
    assert_eq!(one.unwrap().master_port, 0);
    let two = WorldInfo {
        rank: 0,
        local_rank: 0,
        world_size: 2,
    };
    let e = InitOptions::from_env(&two, Some("tcp://host"), clip_dist::Backend::Cpu).unwrap_err();
    assert_config(&e);
}

/// The backend's collectives run with several ranks, and in a world of one only for NCCL with
/// `CLIP_DIST_BACKEND_AT_WORLD_1=1` (the trainer's gradient buckets follow this).
#[test]
fn the_backend_runs_with_several_ranks_or_nccl_asked_for_at_world_1() {
    let one = WorldInfo::single();
    let opts = |backend, at_1| InitOptions {
        backend_at_world_1: at_1,
        ..InitOptions::from_env(&one, None, backend).unwrap()
    };
    let nccl = clip_dist::Backend::Nccl { device_index: 0 };
    let cpu = clip_dist::Backend::Cpu;
    assert!(!opts(nccl, false).runs_backend(1));
    assert!(opts(nccl, true).runs_backend(1));
    assert!(!opts(cpu, true).runs_backend(1));
    assert!(opts(cpu, false).runs_backend(2));
    assert!(opts(nccl, false).runs_backend(2));
}

#[test]
fn timeout_variable() {
    assert_eq!(
        timeout_from_env(lookup(&[])).unwrap(),
        Duration::from_secs(1800)
    );
    assert_eq!(
        timeout_from_env(lookup(&[("CLIP_DIST_TIMEOUT", "2.5")])).unwrap(),
        Duration::from_millis(2500)
    );
    for bad in ["-1", "0", "inf", "soon"] {
        let e = timeout_from_env(lookup(&[("CLIP_DIST_TIMEOUT", bad)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("CLIP_DIST_TIMEOUT={bad:?} is not a positive number of seconds")
        );
        assert_config(&e);
    }
}
