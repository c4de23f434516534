//! Numerical checks of the runtime against independent references:
//! accumulation against one large batch, clipping against hand-computed
//! norms, optimizer steps against hand-computed updates.

use std::path::Path;

use dtl_compiler::plan::{NormType, Optimizer as OptimizerPlan, Plan};
use dtl_runtime::{clip, optim::Optimizer, DeviceChoice, RunOptions};
use tch::{Kind, Tensor};

/// 96 rows of 6 features and 3 classes, deterministic.
fn write_data(dir: &Path) -> std::path::PathBuf {
    let mut text = String::new();
    for row in 0..96u32 {
        let features: Vec<String> = (0..6u32)
            .map(|c| format!("{:.3}", ((row * 7 + c * 13) % 17) as f32 / 17.0))
            .collect();
        text.push_str(&format!("{},{}\n", features.join(","), row % 3));
    }
    let path = dir.join("rows.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn compile(dir: &Path, micro_batch: u32, accumulate: u32, clip: &str, optimizer: &str) -> Plan {
    let source = format!(
        r#"
        model Net {{ forward(x: [B, 6]) -> [B, 3] {{ x |> linear(6, 16) |> tanh |> linear(16, 3) }} }}
        data rows {{ source = csv("rows.csv"); valid = 0; shuffle = false }}
        train {{
          model = Net; data = rows; loss = cross_entropy; optimizer = {optimizer}
          micro_batch = {micro_batch}; accumulate = {accumulate}; steps = 3; seed = 11; clip = {clip}
        }}
        "#
    );
    let options = dtl_compiler::check::Options {
        base_dir: dir.to_path_buf(),
        probe_data: true,
        world: Vec::new(),
        overrides: Vec::new(),
        strict: false,
        data_limits: Default::default(),
        memory_limit: None,
    };
    dtl_compiler::compile_source("test.dtl", &source, &options)
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)))
}

fn train(plan: &Plan, out: &Path) -> (Vec<(String, Tensor)>, Vec<serde_json::Value>) {
    let options = RunOptions {
        out_dir: out.to_path_buf(),
        device: DeviceChoice::Cpu,
        progress: false,
        init_weights: None,
        resume: false,
        trace: false,
        timeout: std::time::Duration::from_secs(60),
        watchdog: None,
        tensorboard: false,
    };
    let world = dtl_runtime::World::join(plan, DeviceChoice::Cpu).unwrap();
    dtl_runtime::train(plan, &options, &world).unwrap();
    let mut weights = Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    (weights, metrics)
}

fn max_abs_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let mut worst = 0.0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        worst = worst.max((ta - tb).abs().max().double_value(&[]));
    }
    worst
}

#[test]
fn accumulating_four_micro_batches_of_8_equals_one_batch_of_32() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    for (clip, optimizer) in [
        ("none", "sgd(lr: 0.5, momentum: 0.9)"),
        ("norm(0.05)", "adamw(lr: 1e-2)"),
    ] {
        let small = compile(dir.path(), 8, 4, clip, optimizer);
        let large = compile(dir.path(), 32, 1, clip, optimizer);
        assert_eq!(small.train.global_batch, large.train.global_batch);
        let (w_small, m_small) = train(&small, &dir.path().join("small"));
        let (w_large, m_large) = train(&large, &dir.path().join("large"));
        let diff = max_abs_diff(&w_small, &w_large);
        assert!(diff < 1e-6, "{clip}/{optimizer}: weights differ by {diff}");
        for (a, b) in m_small.iter().zip(&m_large) {
            let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
            assert!(
                (la - lb).abs() < 1e-6,
                "{clip}/{optimizer}: step loss {la} vs {lb}"
            );
            let (ga, gb) = (
                a["grad_norm"].as_f64().unwrap(),
                b["grad_norm"].as_f64().unwrap(),
            );
            assert!(
                (ga - gb).abs() < 1e-6,
                "{clip}/{optimizer}: grad norm {ga} vs {gb}"
            );
        }
        // The updates are real: the loss moves from step to step.
        let first = m_small[0]["loss"].as_f64().unwrap();
        let last = m_small[2]["loss"].as_f64().unwrap();
        assert!(
            (first - last).abs() > 1e-4,
            "{clip}/{optimizer}: loss did not move ({first} → {last})"
        );
    }
}

#[test]
fn training_is_reproducible_with_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let plan = compile(dir.path(), 8, 2, "norm(1.0)", "adam(lr: 1e-2)");
    let (w1, m1) = train(&plan, &dir.path().join("a"));
    let (w2, m2) = train(&plan, &dir.path().join("b"));
    assert_eq!(m1, m2);
    assert_eq!(max_abs_diff(&w1, &w2), 0.0);
}

/// Parameters whose gradients are set to known values.
fn params_with_grads(grads: &[&[f32]]) -> Vec<Tensor> {
    grads
        .iter()
        .map(|g| {
            let p = Tensor::zeros([g.len() as i64], (Kind::Float, tch::Device::Cpu))
                .set_requires_grad(true);
            // d/dp sum(p * g) = g
            (&p * Tensor::from_slice(g)).sum(Kind::Float).backward();
            p
        })
        .collect()
}

/// Each parameter's gradient (a handle sharing its storage).
fn grads_of(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(Tensor::grad).collect()
}

fn grad_values(p: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(p.grad()).unwrap()
}

#[test]
fn clip_grad_norm_matches_hand_computed_global_norm() {
    // Global L2 norm: sqrt(3² + 0² + 4² + 12²) = 13.
    let params = params_with_grads(&[&[3.0, 0.0, 4.0], &[12.0]]);
    let norm = clip::clip_grad_norm(&grads_of(&params), 6.5, NormType::P(2.0)).unwrap();
    assert!((norm - 13.0).abs() < 1e-5, "{norm}");
    let coef = 6.5 / (13.0 + 1e-6);
    let expect = [3.0 * coef, 0.0, 4.0 * coef];
    for (got, want) in grad_values(&params[0]).iter().zip(expect) {
        assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert!((grad_values(&params[1])[0] as f64 - 12.0 * coef).abs() < 1e-5);

    // Below the threshold nothing changes (the coefficient is clamped at 1).
    let params = params_with_grads(&[&[3.0, 0.0, 4.0], &[12.0]]);
    clip::clip_grad_norm(&grads_of(&params), 100.0, NormType::P(2.0)).unwrap();
    assert_eq!(grad_values(&params[1]), vec![12.0]);

    // The inf-norm is the largest absolute value; the 1-norm the sum.
    let params = params_with_grads(&[&[3.0, -20.0, 4.0], &[12.0]]);
    assert!((clip::grad_norm(grads_of(&params), NormType::Inf).unwrap() - 20.0).abs() < 1e-6);
    assert!((clip::grad_norm(grads_of(&params), NormType::P(1.0)).unwrap() - 39.0).abs() < 1e-5);
}

#[test]
fn clip_grad_value_clamps_each_element() {
    let params = params_with_grads(&[&[3.0, -0.2, -4.0]]);
    clip::clip_grad_value(grads_of(&params), 0.5).unwrap();
    assert_eq!(grad_values(&params[0]), vec![0.5, -0.2, -0.5]);
}

fn one_step(plan: OptimizerPlan, grad: f32, start: f32, steps: usize) -> f32 {
    let p = Tensor::from_slice(&[start]).set_requires_grad(true);
    let mut optimizer = Optimizer::new(&plan, &["w"], &[]);
    for _ in 0..steps {
        let mut q = p.shallow_clone();
        q.zero_grad();
        (&p * grad as f64).sum(Kind::Float).backward();
        optimizer.step([&p].into_iter(), plan.lr()).unwrap();
    }
    p.double_value(&[0]) as f32
}

#[test]
fn optimizer_steps_match_hand_computed_updates() {
    // Adam, step 1: m = 0.1·g, v = 0.001·g², m̂ = g, v̂ = g², update = lr·g/|g|.
    let adam = OptimizerPlan::Adam {
        lr: 0.1,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
    };
    assert!((one_step(adam, 0.5, 1.0, 1) - 0.9).abs() < 1e-6);
    // AdamW decays first: 1·(1 − 0.1·0.1) = 0.99, then the Adam step.
    let adamw = OptimizerPlan::AdamW {
        lr: 0.1,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.1,
    };
    assert!((one_step(adamw, 0.5, 1.0, 1) - 0.89).abs() < 1e-6);
    // SGD with momentum 0.9, constant gradient 2: buffers 2, 3.8; p = 1 − 0.1·(2 + 3.8).
    let sgd = OptimizerPlan::Sgd {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    assert!((one_step(sgd, 2.0, 1.0, 2) - 0.42).abs() < 1e-6);
    // Nesterov: step 1 uses g + 0.9·buf = 2 + 1.8 = 3.8; p = 1 − 0.38.
    let nesterov = OptimizerPlan::Sgd {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 0.0,
    };
    assert!((one_step(nesterov, 2.0, 1.0, 1) - 0.62).abs() < 1e-6);
    // Weight decay adds wd·p to the gradient: g = 2 + 0.5·1; p = 1 − 0.1·2.5.
    let decay = OptimizerPlan::Sgd {
        lr: 0.1,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.5,
    };
    assert!((one_step(decay, 2.0, 1.0, 1) - 0.75).abs() < 1e-6);
}
