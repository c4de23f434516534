//! dtl's own initialisers (the reference tests hand dtl PyTorch's weights
//! with `--init`, so these are checked here): each parameter's initialiser
//! in the plan is PyTorch's for that layer, written out by hand below, and
//! the values drawn follow it — bounds, mean and spread within what the
//! sample size allows (four standard errors).

use dtl_compiler::plan::Init;
use dtl_runtime::model::Model;
use tch::Device;

const SOURCE: &str = r#"
model Net {
  forward(x: [B, 8, 16]) -> [B, 10] {
    x |> layer_norm(16) |> attention(16, 4) |> rms_norm(16) |> pos_embedding(8, 16) |> flatten
      |> linear(128, 300) |> batch_norm(300) |> linear(300, 10)
  }
}
data d { source = synthetic(rows: 64, features: 128, classes: 10); shape = [8, 16] }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
"#;

/// PyTorch's initialisers for these layers: nn.LayerNorm / nn.RMSNorm /
/// nn.BatchNorm1d ones and zeros; nn.MultiheadAttention's in_proj xavier
/// uniform √(6 / (d + 3d)) and zero biases, its out_proj a Linear's
/// kaiming-uniform bound 1/√d; nn.Linear's weight and bias U(±1/√fan_in);
/// the learned position table N(0, 0.02²) (GPT-2's; PyTorch has no module).
fn expected() -> Vec<(&'static str, Init)> {
    let uniform = |bound: f64| Init::Uniform { bound };
    vec![
        ("0.weight", Init::Ones),
        ("0.bias", Init::Zeros),
        ("1.in_proj_weight", uniform((6.0f64 / 64.0).sqrt())),
        ("1.in_proj_bias", Init::Zeros),
        ("1.out_proj.weight", uniform(0.25)),
        ("1.out_proj.bias", Init::Zeros),
        ("2.weight", Init::Ones),
        ("3.weight", Init::Normal { std: 0.02 }),
        ("5.weight", uniform(1.0 / 128f64.sqrt())),
        ("5.bias", uniform(1.0 / 128f64.sqrt())),
        ("6.weight", Init::Ones),
        ("6.bias", Init::Zeros),
        ("7.weight", uniform(1.0 / 300f64.sqrt())),
        ("7.bias", uniform(1.0 / 300f64.sqrt())),
    ]
}

/// Convolutions and an embedding, on images and on token ids.
const CONV_SOURCE: &str = r#"
model Net {
  forward(x: [B, 3, 12, 12]) -> [B, 10] {
    x |> conv2d(3, 8, 3, padding: 1) |> relu |> flatten |> reshape([24, 48])
      |> conv1d(24, 6, 5) |> flatten |> linear(264, 10)
  }
}
data d { source = synthetic(rows: 64, features: 432, classes: 10); shape = [3, 12, 12] }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
"#;

/// nn.Conv2d(3, 8, 3) and nn.Conv1d(24, 6, 5): kaiming-uniform(a = √5)
/// weights, bound 1/√fan_in with fan_in = in channels × kernel size, and
/// biases U(±1/√fan_in).
fn conv_expected() -> Vec<(&'static str, Init)> {
    let uniform = |bound: f64| Init::Uniform { bound };
    vec![
        ("0.weight", uniform(1.0 / 27f64.sqrt())),
        ("0.bias", uniform(1.0 / 27f64.sqrt())),
        ("4.weight", uniform(1.0 / 120f64.sqrt())),
        ("4.bias", uniform(1.0 / 120f64.sqrt())),
    ]
}

const EMBEDDING_SOURCE: &str = r#"
model Net {
  forward(x: [B, 8]) -> [B, 50] { x |> embedding(50, 40) |> flatten |> linear(320, 50) }
}
data d { source = synthetic(rows: 64, features: 8, classes: 50) }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
"#;

/// nn.Embedding(50, 40): N(0, 1).
fn embedding_expected() -> Vec<(&'static str, Init)> {
    vec![("0.weight", Init::Normal { std: 1.0 })]
}

fn values(model: &Model, name: &str) -> Vec<f64> {
    let (_, tensor) = model
        .params
        .iter()
        .chain(&model.buffers)
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}`"));
    let flat = tensor.detach().to_kind(tch::Kind::Double).reshape([-1]);
    Vec::<f64>::try_from(&flat).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

/// The plan of `source`; its synthetic data is read only where the data's
/// features fit the model (an embedding reads token ids, which synthetic
/// data does not give, and the weights do not depend on the data).
fn compile(source: &str) -> dtl_compiler::plan::Plan {
    let probe = !source.contains("embedding");
    let options = dtl_compiler::options_for(std::path::Path::new("t.dtl"), probe);
    dtl_compiler::compile_source("t.dtl", source, &options)
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)))
}

#[test]
fn initialisers_are_pytorchs_and_draw_what_they_say() {
    let plan = compile(SOURCE);
    let model = Model::build(&plan.model, 5, Device::Cpu).unwrap();
    check_initialisers(&plan, &model, expected());
    // Buffers: batch norm's running statistics start at 0 and 1.
    assert!(values(&model, "6.running_mean").iter().all(|x| *x == 0.0));
    assert!(values(&model, "6.running_var").iter().all(|x| *x == 1.0));
    // Seeded: the same seed draws the same weights, another seed others,
    // and two tensors of one seed are not copies of each other.
    let again = Model::build(&plan.model, 5, Device::Cpu).unwrap();
    let other = Model::build(&plan.model, 6, Device::Cpu).unwrap();
    assert_eq!(values(&model, "5.weight"), values(&again, "5.weight"));
    assert_ne!(values(&model, "5.weight"), values(&other, "5.weight"));
    assert_ne!(
        values(&model, "5.weight")[..10],
        values(&model, "5.bias")[..10]
    );
}

#[test]
fn convolution_and_embedding_initialisers_are_pytorchs() {
    let plan = compile(CONV_SOURCE);
    let model = Model::build(&plan.model, 5, Device::Cpu).unwrap();
    check_initialisers(&plan, &model, conv_expected());
    let plan = compile(EMBEDDING_SOURCE);
    let model = Model::build(&plan.model, 5, Device::Cpu).unwrap();
    check_initialisers(&plan, &model, embedding_expected());
}

/// Each parameter's initialiser in the plan is `expected`'s, and the values
/// drawn follow it: bounds, mean and spread within four standard errors.
fn check_initialisers(plan: &dtl_compiler::plan::Plan, model: &Model, expected: Vec<(&str, Init)>) {
    for (name, want) in expected {
        let spec = &plan
            .model
            .parameters
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no parameter `{name}`"))
            .init;
        let same = match (spec, &want) {
            (Init::Uniform { bound: a }, Init::Uniform { bound: b }) => close(*a, *b),
            (Init::Normal { std: a }, Init::Normal { std: b }) => close(*a, *b),
            (a, b) => a == b,
        };
        assert!(same, "`{name}`: the plan says {spec:?}, PyTorch {want:?}");

        let v = values(model, name);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        match want {
            Init::Ones => assert!(v.iter().all(|x| *x == 1.0), "`{name}` is not all ones"),
            Init::Zeros => assert!(v.iter().all(|x| *x == 0.0), "`{name}` is not all zeros"),
            Init::Uniform { bound } => {
                let sigma = bound / 3f64.sqrt();
                let largest = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                assert!(
                    largest <= bound,
                    "`{name}`: |w| reaches {largest} > {bound}"
                );
                // All of n draws below 0.8 of the bound: 0.8ⁿ, 6e-7 for 64.
                assert!(
                    n < 64.0 || largest > 0.8 * bound,
                    "`{name}`: |w| only reaches {largest} of {bound}"
                );
                assert!(mean.abs() < 4.0 * sigma / n.sqrt(), "`{name}`: mean {mean}");
                assert!(
                    (std / sigma - 1.0).abs() < 4.0 / (2.0 * n).sqrt(),
                    "`{name}`: std {std}, U(±{bound}) has {sigma}"
                );
            }
            Init::Normal { std: sigma } => {
                assert!(mean.abs() < 4.0 * sigma / n.sqrt(), "`{name}`: mean {mean}");
                assert!(
                    (std / sigma - 1.0).abs() < 4.0 / (2.0 * n).sqrt(),
                    "`{name}`: std {std}, N(0, {sigma}²)"
                );
            }
        }
    }
}
