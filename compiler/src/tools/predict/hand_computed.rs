//! The prediction of a small plan on a cluster of round figures, against
//! the arithmetic done by hand.

use super::super::cluster::{Cluster, Device, Efficiency, Link, Node, PeakFlops};

/// A cluster of round figures: one device a node, so that 2 ranks
/// cross the network.
fn round_cluster() -> Cluster {
    Cluster {
        name: "round".into(),
        device: Device {
            name: "d".into(),
            peak_flops: PeakFlops {
                fp32: 1e9,
                tf32: None,
                bf16: None,
                fp16: None,
            },
            memory_bytes: 1 << 30,
            memory_bandwidth: 1e9,
        },
        node: Node {
            devices: 1,
            link: Link {
                bandwidth: 1e9,
                latency: 0.0,
            },
            share: vec![],
        },
        network: Link {
            bandwidth: 1e6,
            latency: 1e-3,
        },
        efficiency: Efficiency {
            compute: 0.5,
            network: 0.5,
            memory: 0.5,
        },
        sources: vec![],
    }
}

#[test]
fn two_replicas_of_a_linear_layer_take_what_the_arithmetic_says() {
    let source = r#"
        model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) } }
        data d { source = synthetic(rows: 100, features: 64, classes: 10) }
        train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8; accumulate = 2 }
        parallel { data = 2 }
    "#;
    let options = crate::options_for(std::path::Path::new("t.dtl"), true);
    let plan = crate::compile_source("t.dtl", source, &options).unwrap();
    let cost = crate::tools::explain::cost(&plan);
    let p = super::predict(&plan, &cost, &round_cluster());
    // 2 micro-batches of 8 rows at 3 × 1,280 FLOPs, at 0.5 × 1 GFLOP/s.
    let compute = 2.0 * 8.0 * 3840.0 / 0.5e9;
    // 650 values of 4 bytes, a ring over 2 sends them all, in 2
    // messages of 1 ms, at 0.5 × 1 MB/s.
    let all_reduce = 2.0 * 1e-3 + 2600.0 / 0.5e6;
    // The bucket's 2600 bytes copied into the exchange's buffer and
    // divided on the way back: read and written twice at 0.5 × 1 GB/s.
    let copies = 4.0 * 2600.0 / 0.5e9;
    // Plain SGD reads a value and its gradient and writes the value.
    let optimizer = 3.0 * 650.0 * 4.0 / 0.5e9;
    let parts: Vec<(&str, f64)> = p.parts.iter().map(|x| (x.link, x.seconds)).collect();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.max(1e-12);
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert!(close(parts[0].1, compute), "{parts:?}");
    assert_eq!(parts[1].0, "network");
    assert!(close(parts[1].1, all_reduce), "{parts:?}");
    assert_eq!(parts[2].0, "memory");
    assert!(close(parts[2].1, copies), "{parts:?}");
    assert_eq!(parts[3].0, "memory");
    assert!(close(parts[3].1, optimizer), "{parts:?}");
    let step = compute + all_reduce + copies + optimizer;
    assert!(close(p.step_seconds, step));
    assert!(close(p.samples_per_second, 32.0 / step));
    assert!(close(p.mfu, 32.0 * 3840.0 / (step * 2.0 * 1e9)));
    assert!(p.memory.fits());
}

/// A piece of one row through a wide layer is bound by reading its
/// weights, 64 rows by its FLOPs: the roofline counts the weights once a
/// piece, beside each row's output and input.
#[test]
fn a_piece_of_few_rows_is_bound_by_its_weights() {
    let step = |rows: u64| {
        let source = format!(
            r#"
            model Net {{ forward(x: [B, 256]) -> [B, 10] {{ x |> linear(256, 256) |> linear(256, 10) }} }}
            data d {{ source = synthetic(rows: 100, features: 256, classes: 10) }}
            train {{ model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = {rows} }}
        "#
        );
        let options = crate::options_for(std::path::Path::new("t.dtl"), true);
        let plan = crate::compile_source("t.dtl", &source, &options).unwrap();
        let cost = crate::tools::explain::cost(&plan);
        super::predict(&plan, &cost, &round_cluster()).parts[0].seconds
    };
    // The first layer: 65,792 weights, 131,072 FLOPs and 256 outputs a
    // row (its input as many); the second 2,570, 5,120 and 10 (read 256).
    let layer = |rows: f64, weights: f64, flops: f64, values: f64| {
        let moved = rows * 2.0 * values * 4.0 + weights * 4.0;
        (rows * flops / 0.5e9).max(moved / 0.5e9)
    };
    for rows in [1.0, 64.0] {
        let forward = layer(rows, 65792.0, 131072.0, 256.0) + layer(rows, 2570.0, 5120.0, 10.0);
        let expected = 3.0 * forward;
        let got = step(rows as u64);
        assert!(
            (got - expected).abs() <= 1e-12 * expected,
            "{rows} rows: {got} against {expected}"
        );
    }
    // One row: 263 KB of weights at 0.5 GB/s, against 131 kFLOP at 0.5
    // GFLOP/s.
    assert!(layer(1.0, 65792.0, 131072.0, 256.0) > 131072.0 / 0.5e9);
    assert!(layer(64.0, 65792.0, 131072.0, 256.0) == 64.0 * 131072.0 / 0.5e9);
}

/// Two ranks sharing one device (`node.share` [1, 0.5]): each computes at
/// half the rate and moves memory at half the bandwidth; a layer is
/// charged the slower of its FLOPs and its values through memory (the
/// ReLU is memory-bound here, the linear layer compute-bound); the node's
/// memory is split between them.
#[test]
fn ranks_sharing_a_device_split_it_and_each_layer_takes_its_roofline() {
    let source = r#"
        model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) |> relu } }
        data d { source = synthetic(rows: 100, features: 64, classes: 10) }
        train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
        parallel { data = 2 }
    "#;
    let options = crate::options_for(std::path::Path::new("t.dtl"), true);
    let plan = crate::compile_source("t.dtl", source, &options).unwrap();
    let cost = crate::tools::explain::cost(&plan);
    let mut cluster = round_cluster();
    cluster.node.devices = 2;
    cluster.node.share = vec![1.0, 0.5];
    let p = super::predict(&plan, &cost, &cluster);
    // Half of 0.5 × 1 GFLOP/s, and of 0.5 × 1 GB/s.
    let (rate, bandwidth) = (0.25e9, 0.25e9);
    let per_sample: f64 = cost
        .layers
        .iter()
        .filter(|l| l.forward_flops > 0)
        .map(|l| {
            let compute = l.forward_flops as f64 / rate;
            let memory = 2.0 * l.activations as f64 * 4.0 / bandwidth;
            3.0 * compute.max(memory)
        })
        .sum();
    let relu = cost.layers.iter().find(|l| l.kind == "relu").unwrap();
    assert!(8.0 * relu.activations as f64 / bandwidth > relu.forward_flops as f64 / rate);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.max(1e-12);
    assert!(close(p.parts[0].seconds, 8.0 * per_sample), "{:?}", p.parts);
    // The two ranks share the node, so the all-reduce stays on its link.
    assert_eq!(p.parts[1].link, "node");
    let optimizer = 3.0 * 650.0 * 4.0 / 0.25e9;
    let named = |name: &str| p.parts.iter().find(|x| x.name.starts_with(name)).unwrap();
    assert!(
        close(named("optimizer step").seconds, optimizer),
        "{:?}",
        p.parts
    );
    assert_eq!(p.memory.device_bytes, (1 << 30) / 2);
}

/// `sequence = true` (tests/cases' 2 replicas × 2 tensor ranks): a layer
/// whose output a rank holds by parts computes half of it there, the
/// others as without; each all-gather and reduce-scatter sends T − 1
/// messages where an all-reduce sends 2(T − 1), the same bytes a ring.
#[test]
fn sequence_parallelism_halves_the_held_layers_and_counts_its_messages() {
    let path = std::path::Path::new("../tests/cases/ok/parallel_sequence.dtl");
    let source = std::fs::read_to_string(path).unwrap();
    let compile = |sequence: bool| {
        let mut options = crate::options_for(path, true);
        let setting = format!("parallel.sequence={sequence}");
        options.overrides = vec![crate::overrides::parse(&setting).unwrap()];
        crate::compile_source("t.dtl", &source, &options).unwrap()
    };
    let (parts, whole) = (compile(true), compile(false));
    assert!(!parts.topology.sequence.is_empty());
    let mut cluster = round_cluster();
    cluster.node.devices = 4;
    let (rate, bandwidth) = (0.5e9, 0.5e9);
    let predict = |plan: &crate::plan::Plan| {
        let cost = crate::tools::explain::cost(plan);
        (super::predict(plan, &cost, &cluster), cost)
    };
    let ((p, cost), (q, _)) = (predict(&parts), predict(&whole));
    // Each layer held by parts and not split: half of its roofline time,
    // 3 × for forward and backward, for the 8 rows of each of 2 pieces.
    let saved: f64 = parts
        .topology
        .sequence
        .iter()
        .filter(|&&i| parts.topology.tensor_split(i).is_none())
        .map(|&i| {
            let l = &cost.layers[i];
            let time =
                (l.forward_flops as f64 / rate).max(2.0 * l.activations as f64 * 4.0 / bandwidth);
            3.0 * time / 2.0
        })
        .sum::<f64>()
        * 8.0
        * 2.0;
    assert!(saved > 0.0);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.max(1e-12);
    assert!(
        close(q.parts[0].seconds - p.parts[0].seconds, saved),
        "{:?} against {:?}",
        p.parts,
        q.parts
    );
    // With a latency on the node's link (the tensor group's), the tensor
    // part grows by a latency a message: per piece (accumulate 2) each
    // collective's, the once-a-step ones once.
    let latency = |plan: &crate::plan::Plan, latency: f64| {
        let mut cluster = round_cluster();
        cluster.node.devices = 4;
        cluster.node.link.latency = latency;
        let cost = crate::tools::explain::cost(plan);
        let p = super::predict(plan, &cost, &cluster);
        p.parts
            .iter()
            .find(|x| x.name.starts_with("tensor"))
            .map(|x| x.seconds)
            .unwrap()
    };
    let messages = |plan: &crate::plan::Plan| {
        let collectives = plan
            .step_program
            .iter()
            .find_map(|op| match op {
                crate::plan::StepOp::TensorAllReduces { collectives, .. } => Some(collectives),
                _ => None,
            })
            .unwrap();
        collectives
            .iter()
            .map(|c| match c.pass {
                crate::plan::Pass::Update => c.op.ring_messages(2),
                _ => 2 * c.op.ring_messages(2),
            })
            .sum::<u64>()
    };
    for plan in [&parts, &whole] {
        let added = latency(plan, 1e-3) - latency(plan, 0.0);
        assert!(close(added, messages(plan) as f64 * 1e-3), "{added}");
    }
    // An all-reduce's 2 messages are an all-gather's and a reduce-scatter's.
    assert_eq!(crate::plan::TensorOp::AllReduce.ring_messages(4), 6);
    assert_eq!(crate::plan::TensorOp::AllGather.ring_messages(4), 3);
    assert_eq!(crate::plan::TensorOp::ReduceScatter.ring_messages(4), 3);
}
