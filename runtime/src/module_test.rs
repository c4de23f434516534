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
    let params = model
        .params
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect::<Vec<_>>();
    finite_differences(&params, || loss(model), seed, name)
}

/// Compares each parameter's `.grad()` (autograd's, already computed) with
/// central finite differences of `loss`, on up to 6 elements of each
/// parameter, with torch.autograd.gradcheck's tolerances.
fn finite_differences(
    params: &[(String, Tensor)],
    loss: impl Fn() -> Result<Tensor, RunError>,
    seed: u64,
    name: &str,
) -> Result<Failures, RunError> {
    let ctx = || format!("test `{name}`: gradcheck");
    let mut failures = Vec::new();
    let eps = 1e-6;
    let mut pick = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (param_name, param) in params {
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
            let plus = tch::no_grad(&loss)?.f_double_value(&[]).context(ctx)?;
            tch::no_grad(|| element.f_add_scalar_(-2.0 * eps).in_place(ctx))?;
            let minus = tch::no_grad(&loss)?.f_double_value(&[]).context(ctx)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A "layer" whose autograd gradient is wrong: w.detach() · w has the
    /// derivative 2w, but autograd sees only w. gradcheck must say so; the
    /// honest w · w passes.
    #[test]
    fn gradcheck_catches_a_wrong_gradient() {
        let w = Tensor::from_slice(&[0.5f64, -1.5, 2.0, 0.25]).set_requires_grad(true);
        let projection = Tensor::from_slice(&[1.0f64, 2.0, -1.0, 3.0]);
        let params = vec![("w".to_string(), w.shallow_clone())];
        for (honest, expect_failure) in [(false, true), (true, false)] {
            let loss = || -> Result<Tensor, RunError> {
                let left = if honest {
                    w.shallow_clone()
                } else {
                    w.detach()
                };
                Ok(left
                    .f_mul(&w)
                    .unwrap()
                    .f_mul(&projection)
                    .unwrap()
                    .f_sum(Kind::Double)
                    .unwrap())
            };
            let mut grad = w.grad();
            if grad.defined() {
                let _ = grad.f_zero_();
            }
            loss().unwrap().backward();
            let failures = finite_differences(&params, loss, 7, "wrong").unwrap();
            assert_eq!(!failures.is_empty(), expect_failure, "{failures:?}");
            if expect_failure {
                assert!(
                    failures[0].contains("by finite differences"),
                    "{failures:?}"
                );
            }
        }
    }
}
