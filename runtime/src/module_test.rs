//! `dtl test`: runs a module test on real tensors — the output shape, finite
//! values, gradients reaching every parameter, and autograd against finite
//! differences in float64.

use dtl_compiler::plan::{Dim, Op, TestPlan};
use tch::{Device, Kind, Tensor};

use crate::error::{InPlace, RunError, TorchContext};
use crate::model::Model;

/// What went wrong in one test; empty when it passed.
pub type Failures = Vec<String>;

pub fn run(test: &TestPlan, seed: u64) -> Result<Failures, RunError> {
    tch::manual_seed(seed as i64);
    let mut failures = Vec::new();
    let mut model = Model::build(&test.model, seed, Device::Cpu)?;
    let input = random_input(test)?;
    let ctx = || format!("test `{}`", test.name);

    let output = model.forward(&input, false)?;
    let expected: Vec<i64> = test
        .model
        .output
        .iter()
        .map(|d| if let Dim::Size(n) = d { *n } else { -1 })
        .collect();
    if output.size() != expected {
        failures.push(format!(
            "output shape {:?}, expected {expected:?}",
            output.size()
        ));
    }
    let finite = output
        .f_isfinite()
        .and_then(|f| f.f_all())
        .and_then(|a| a.f_int64_value(&[]))
        .context(ctx)?;
    if finite == 0 {
        failures.push("the output has NaN or infinite values".into());
    }
    if test.grads_reach_all_params {
        // An output that depends on no parameter has no graph to go back
        // through: then no gradient reaches any of them.
        if output.requires_grad() {
            output
                .f_sum(Kind::Float)
                .and_then(|s| s.f_backward())
                .context(ctx)?;
        }
        for (name, param) in &model.params {
            let grad = param.grad();
            let reached = grad.defined()
                && grad
                    .f_abs()
                    .and_then(|a| a.f_sum(Kind::Double))
                    .and_then(|s| s.f_double_value(&[]))
                    .context(ctx)?
                    > 0.0;
            if !reached {
                failures.push(format!("no gradient reaches `{name}`"));
            }
        }
        model.zero_grad();
    }
    if test.gradcheck {
        failures.extend(gradcheck(&mut model, &input, seed, &test.name)?);
    }
    Ok(failures)
}

/// Seeded input of the test's shape: standard normal values, or valid
/// indices when the first layer is an embedding.
fn random_input(test: &TestPlan) -> Result<Tensor, RunError> {
    let shape: Vec<i64> = test
        .model
        .input
        .iter()
        .map(|d| if let Dim::Size(n) = d { *n } else { 1 })
        .collect();
    let first_reader = test.model.nodes.iter().find(|n| n.inputs.contains(&0));
    let ctx = || format!("test `{}`: input", test.name);
    match first_reader.map(|n| &n.op) {
        Some(Op::Embedding { num_embeddings, .. }) => Tensor::f_randint(
            *num_embeddings,
            shape.as_slice(),
            (Kind::Int64, Device::Cpu),
        )
        .and_then(|t| t.f_to_kind(Kind::Float))
        .context(ctx),
        _ => Tensor::f_randn(shape.as_slice(), (Kind::Float, Device::Cpu)).context(ctx),
    }
}

/// Compares autograd's gradient of a random projection of the output with
/// central finite differences, in float64, on up to 6 elements of each
/// parameter, with torch.autograd.gradcheck's tolerances (atol 1e-5, rtol 1e-3).
fn gradcheck(
    model: &mut Model,
    input: &Tensor,
    seed: u64,
    name: &str,
) -> Result<Failures, RunError> {
    let ctx = || format!("test `{name}`: gradcheck");
    model.to_kind(Kind::Double)?;
    let input = if input.kind() == Kind::Float {
        input.f_to_kind(Kind::Double).context(ctx)?
    } else {
        input.shallow_clone()
    };
    let projection = Tensor::f_randn(
        model.forward(&input, false)?.size().as_slice(),
        (Kind::Double, Device::Cpu),
    )
    .context(ctx)?;
    let loss = |model: &Model| -> Result<Tensor, RunError> {
        model
            .forward(&input, false)?
            .f_mul(&projection)
            .and_then(|t| t.f_sum(Kind::Double))
            .context(ctx)
    };
    model.zero_grad();
    let total = loss(model)?;
    if !total.requires_grad() {
        return Ok(if model.params.is_empty() {
            vec![]
        } else {
            vec!["gradcheck: the output does not depend on the parameters".into()]
        });
    }
    total.f_backward().context(ctx)?;
    let mut failures = Vec::new();
    let eps = 1e-6;
    let mut pick = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for index in 0..model.params.len() {
        let (param_name, param) = (
            &model.params[index].0,
            model.params[index].1.shallow_clone(),
        );
        let analytic = param.grad().f_reshape([-1]).context(ctx)?;
        let numel = param.numel() as u64;
        for _ in 0..6.min(numel) {
            pick = pick
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = ((pick >> 33) % numel) as i64;
            let mut element = param
                .f_reshape([-1])
                .and_then(|f| f.f_narrow(0, at, 1))
                .context(ctx)?;
            tch::no_grad(|| element.f_add_scalar_(eps).in_place(ctx))?;
            let plus = tch::no_grad(|| loss(model))?
                .f_double_value(&[])
                .context(ctx)?;
            tch::no_grad(|| element.f_add_scalar_(-2.0 * eps).in_place(ctx))?;
            let minus = tch::no_grad(|| loss(model))?
                .f_double_value(&[])
                .context(ctx)?;
            tch::no_grad(|| element.f_add_scalar_(eps).in_place(ctx))?;
            let numeric = (plus - minus) / (2.0 * eps);
            let exact = analytic.f_double_value(&[at]).context(ctx)?;
            if (numeric - exact).abs() > 1e-5 + 1e-3 * exact.abs() {
                failures.push(format!(
                    "gradcheck: d/d {param_name}[{at}] is {exact:.6e} by autograd but {numeric:.6e} by finite differences"
                ));
                break;
            }
        }
    }
    Ok(failures)
}
