use tch::{Device, Kind, Tensor};
use torch_ext::profiler::{Profiler, Range};

/// The trace is torch.profiler's Chrome trace: aten ops by name, the user range around them,
/// and `aten::_local_scalar_dense` for a read of a value (`.item()`).
#[test]
fn the_profiler_writes_a_chrome_trace_with_aten_ops_inside_named_ranges() {
    let dir = std::env::temp_dir().join(format!("torch-ext-prof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.json");
    let a = Tensor::randn([16, 16], (Kind::Float, Device::Cpu));
    // Outside the profile: not recorded.
    let _ = a.matmul(&a);
    let p = Profiler::start(Device::Cpu).unwrap();
    {
        let _r = Range::new("my_phase");
        let _ = a.matmul(&a).sum(Kind::Float).double_value(&[]);
    }
    p.save(&path).unwrap();
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let named = |n: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["name"] == n && e["ph"] == "X")
            .collect()
    };
    let range = named("my_phase");
    assert_eq!(range.len(), 1, "{trace:#}");
    let (start, end) = (
        range[0]["ts"].as_f64().unwrap(),
        range[0]["ts"].as_f64().unwrap() + range[0]["dur"].as_f64().unwrap(),
    );
    for op in ["aten::matmul", "aten::sum", "aten::_local_scalar_dense"] {
        // aten::sum appears twice: the op and its redispatch nested inside it.
        let found = named(op);
        assert!(!found.is_empty(), "{op} missing: {trace:#}");
        for e in found {
            let ts = e["ts"].as_f64().unwrap();
            assert!(
                start <= ts && ts <= end,
                "{op} at {ts} outside [{start}, {end}]"
            );
            assert_eq!(e["cat"], "cpu_op");
        }
    }
    assert_eq!(range[0]["cat"], "user_annotation");
    // A range with no profiler running is inert.
    drop(Range::new("unrecorded"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The private generator draws what the default one draws after `manual_seed` with its seed.
/// Compared in a child process running only this test: the other tests draw from the default
/// generator on their threads meanwhile.
#[test]
fn a_private_generator_draws_what_manual_seed_draws() {
    const NAME: &str = "profiler::a_private_generator_draws_what_manual_seed_draws";
    if std::env::var_os("TORCH_EXT_TEST_RNG_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads", "1"])
            .env("TORCH_EXT_TEST_RNG_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    let mut g = torch_ext::generator::Generator::new(1234).unwrap();
    let (a, b) = (
        g.randn(&[3, 5, 7]).unwrap(),
        g.randint(1, 50, &[9]).unwrap(),
    );
    tch::manual_seed(1234);
    let a0 = Tensor::randn([3, 5, 7], (Kind::Float, Device::Cpu));
    let b0 = Tensor::randint_low(1, 50, [9], (Kind::Int64, Device::Cpu));
    assert!(a.equal(&a0) && b.equal(&b0));
}
