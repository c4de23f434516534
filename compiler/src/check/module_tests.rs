//! Module tests: `test name { Block(64, 128) on [4, 64] gives [4, 128] }`.
//! The checker proves the shape claim; `dtl test` runs the module for real.

use std::collections::BTreeMap;

use super::args::{eval, Env, Value};
use super::lint::Lint;
use super::model::{Elaborator, ShapeNote};
use super::CheckError;
use crate::ast::{DimExpr, ExprKind, ModuleDef, ShapeExpr, TestDef};
use crate::plan::{shape_to_string, Dim, Shape, TestPlan};
use crate::util::suggest::did_you_mean;

const OPTIONS: [&str; 2] = ["grads_reach_all_params", "gradcheck"];

/// Checks every test of a file; returns the plans of those that hold.
pub fn check_tests(
    tests: &[&TestDef],
    modules: &BTreeMap<String, &ModuleDef>,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
    shapes: &mut Vec<ShapeNote>,
) -> Vec<TestPlan> {
    let mut plans = Vec::new();
    let mut seen: BTreeMap<&str, &TestDef> = BTreeMap::new();
    for test in tests {
        if let Some(first) = seen.insert(&test.name.name, test) {
            errors.push(CheckError::Duplicate {
                kind: "test",
                name: test.name.name.clone(),
                span: test.name.span,
                first: first.name.span,
            });
            continue;
        }
        if let Some(plan) = check_test(test, modules, errors, lints, shapes) {
            plans.push(plan);
        }
    }
    plans
}

fn check_test(
    test: &TestDef,
    modules: &BTreeMap<String, &ModuleDef>,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
    shapes: &mut Vec<ShapeNote>,
) -> Option<TestPlan> {
    let input = concrete(&test.input, errors)?;
    let expected = concrete(&test.output, errors)?;
    let (mut grads, mut gradcheck) = (false, false);
    for option in &test.options {
        match &option.kind {
            ExprKind::Name(n) if n.name == "grads_reach_all_params" => grads = true,
            ExprKind::Name(n) if n.name == "gradcheck" => gradcheck = true,
            ExprKind::Name(n) => {
                errors.push(CheckError::UnknownName {
                    kind: "test option",
                    name: n.name.clone(),
                    span: n.span,
                    help: did_you_mean(&n.name, OPTIONS)
                        .or_else(|| Some(format!("options: {}", OPTIONS.join(", ")))),
                });
                return None;
            }
            _ => {
                errors.push(CheckError::TypeMismatch {
                    expected: format!("a test option ({})", OPTIONS.join(", ")),
                    found: "something else".into(),
                    span: option.span,
                    help: None,
                });
                return None;
            }
        }
    }
    let mut elaborator = Elaborator::new(modules);
    let model = elaborator.elaborate_subject(&test.name.name, &test.subject, input);
    lints.append(&mut elaborator.lints);
    shapes.append(&mut elaborator.shapes);
    if model.is_none() {
        errors.append(&mut elaborator.errors);
        return None;
    }
    let model = model?;
    if model.output != expected {
        errors.push(CheckError::ShapeMismatch {
            expected: shape_to_string(&expected),
            found: shape_to_string(&model.output),
            span: test.output.span,
            what: format!("the subject produces {}", shape_to_string(&model.output)),
            help: None,
        });
        return None;
    }
    Some(TestPlan {
        name: test.name.name.clone(),
        model,
        grads_reach_all_params: grads,
        gradcheck,
    })
}

/// Test shapes are sizes: the test runs on a real tensor.
fn concrete(shape: &ShapeExpr, errors: &mut Vec<CheckError>) -> Option<Shape> {
    let mut dims = Vec::new();
    for dim in &shape.dims {
        let size = match dim {
            DimExpr::Size(n, _) => Some(*n),
            DimExpr::Expr(expr) => match eval(expr, &Env::new()) {
                Ok(Value::Int(n)) => Some(n),
                _ => None,
            },
            DimExpr::Name(_) => None,
        };
        match size {
            Some(n) if n >= 1 => dims.push(Dim::Size(n)),
            _ => {
                errors.push(CheckError::InvalidValue {
                    message: "a test's shapes must be sizes ≥ 1".into(),
                    span: dim.span(),
                    label: "not a size".into(),
                    help: Some("tests run on real tensors, e.g. `on [4, 64]`".into()),
                });
                return None;
            }
        }
    }
    Some(dims)
}
