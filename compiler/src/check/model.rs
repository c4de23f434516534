//! Elaboration of the model: every module instance is expanded with its
//! argument values, shapes are inferred through each forward chain with a
//! symbolic batch dimension, and the result is the plan's flat node list with
//! PyTorch-style parameter names (`0.weight`, `1.fc.bias`).

use std::collections::BTreeMap;

use super::args::{bind, eval, Env, ParamSig, Ty, Value};
use super::library::{join_path, Builtin, BUILTIN_NAMES};
use super::suggest::did_you_mean;
use super::CheckError;
use crate::ast::{DimExpr, Expr, ExprKind, ModuleDef, ModuleKind, ShapeExpr};
use crate::plan::{shape_to_string, Dim, ModelPlan, Node, ParamSpec, Shape};
use crate::span::Span;

/// What a stage of a forward chain refers to, once resolved.
#[derive(Clone, Copy)]
enum Callee<'a> {
    Builtin(Builtin),
    Module(&'a ModuleDef),
}

pub struct Elaborator<'a> {
    modules: &'a BTreeMap<String, &'a ModuleDef>,
    pub errors: Vec<CheckError>,
    params: Vec<ParamSpec>,
    nodes: Vec<Node>,
    /// Modules being expanded, to catch a module that contains itself.
    stack: Vec<String>,
}

impl<'a> Elaborator<'a> {
    pub fn new(modules: &'a BTreeMap<String, &'a ModuleDef>) -> Self {
        Elaborator {
            modules,
            errors: Vec::new(),
            params: Vec::new(),
            nodes: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// Expands the model `def` into the plan's model. `None` if anything in it
    /// is wrong (the errors say what).
    pub fn elaborate_model(mut self, def: &'a ModuleDef) -> (Option<ModelPlan>, Vec<CheckError>) {
        let forward = match self.single_forward(def) {
            Some(f) => f,
            None => return (None, self.errors),
        };
        let env = Env::new();
        let input = self.resolve_shape(&forward.input_shape, &env);
        let output = self.instantiate(def, &env, "", input.clone(), def.name.span);
        let ok = self.errors.is_empty();
        let plan = match (output, ok) {
            (Some(output), true) => {
                let parameter_count = self
                    .params
                    .iter()
                    .map(|p| p.shape.iter().product::<i64>() as u64)
                    .sum();
                Some(ModelPlan {
                    name: def.name.name.clone(),
                    input,
                    output,
                    parameter_count,
                    parameters: self.params,
                    nodes: self.nodes,
                })
            }
            _ => None,
        };
        (plan, self.errors)
    }

    fn single_forward(&mut self, def: &'a ModuleDef) -> Option<&'a crate::ast::Forward> {
        match def.forwards.as_slice() {
            [] => {
                self.errors.push(CheckError::MissingItem {
                    message: format!("{} `{}` has no `forward`", kind_word(def), def.name.name),
                    span: def.name.span,
                    help: Some("add `forward(x: [B, 64]) -> [B, 10] { x |> ... }`".into()),
                });
                None
            }
            [first, rest @ ..] => {
                for extra in rest {
                    self.errors.push(CheckError::Duplicate {
                        kind: "forward of",
                        name: def.name.name.clone(),
                        span: Span::new(extra.span.start, extra.span.start + "forward".len()),
                        first: Span::new(first.span.start, first.span.start + "forward".len()),
                    });
                }
                Some(first)
            }
        }
    }

    /// Expands one instance of `def` with parameter values `env` at module
    /// path `scope`, applied to `input`. Returns its output shape.
    fn instantiate(
        &mut self,
        def: &'a ModuleDef,
        env: &Env,
        scope: &str,
        input: Shape,
        call_span: Span,
    ) -> Option<Shape> {
        if self.stack.contains(&def.name.name) {
            self.errors.push(CheckError::invalid(
                format!("module `{}` contains itself", def.name.name),
                call_span,
                "used inside its own definition",
            ));
            return None;
        }
        let forward = self.single_forward(def)?;
        self.stack.push(def.name.name.clone());
        let result = self.expand_forward(def, forward, env, scope, input, call_span);
        self.stack.pop();
        result
    }

    fn expand_forward(
        &mut self,
        def: &'a ModuleDef,
        forward: &'a crate::ast::Forward,
        env: &Env,
        scope: &str,
        input: Shape,
        call_span: Span,
    ) -> Option<Shape> {
        let declared_in = self.resolve_shape(&forward.input_shape, env);
        let declared_out = self.resolve_shape(&forward.output_shape, env);
        let mut bindings = BTreeMap::new();
        if !unify(&declared_in, &input, &mut bindings) {
            self.errors.push(CheckError::ShapeMismatch {
                expected: shape_to_string(&declared_in),
                found: shape_to_string(&input),
                span: call_span,
                what: format!("`{}` is given {}", def.name.name, shape_to_string(&input)),
                help: Some(format!(
                    "`{}` is declared as forward({}: {})",
                    def.name.name,
                    forward.input.name,
                    shape_to_string(&declared_in)
                )),
            });
            return None;
        }
        let layers = self.bind_layer_defs(def, env);
        let stages: &[Expr] = match &forward.body.kind {
            ExprKind::Pipe(stages) => stages,
            _ => std::slice::from_ref(&forward.body),
        };
        match stages.first().map(|s| &s.kind) {
            Some(ExprKind::Name(first)) if first.name == forward.input.name => {}
            _ => {
                self.errors.push(CheckError::Unsupported {
                    message: format!(
                        "a forward chain must start with its input `{}`",
                        forward.input.name
                    ),
                    span: stages[0].span,
                    help: Some(format!("write `{} |> ...`", forward.input.name)),
                });
                return None;
            }
        }
        let mut shape = input;
        for (index, stage) in stages[1..].iter().enumerate() {
            shape = self.apply_stage(stage, index, &layers, env, scope, shape)?;
        }
        let expected = substitute(&declared_out, &bindings);
        if !unify(&expected, &shape, &mut bindings.clone()) {
            self.errors.push(CheckError::ShapeMismatch {
                expected: shape_to_string(&expected),
                found: shape_to_string(&shape),
                span: forward.output_shape.span,
                what: format!("the body produces {}", shape_to_string(&shape)),
                help: Some("make the declared output shape match the last layer".into()),
            });
            return None;
        }
        Some(substitute(&declared_out, &bindings))
    }

    /// Resolves the named layers of a module (`fc = linear(...)`), reporting
    /// every bad one even if the forward never uses it.
    fn bind_layer_defs(
        &mut self,
        def: &'a ModuleDef,
        env: &Env,
    ) -> BTreeMap<String, BoundLayer<'a>> {
        let mut layers = BTreeMap::new();
        let mut first_seen: BTreeMap<&str, Span> = BTreeMap::new();
        for layer in &def.layers {
            if let Some(first) = first_seen.insert(&layer.name.name, layer.name.span) {
                self.errors.push(CheckError::Duplicate {
                    kind: "layer",
                    name: layer.name.name.clone(),
                    span: layer.name.span,
                    first,
                });
                continue;
            }
            if let Some(bound) = self.bind_layer(&layer.value, env, None) {
                layers.insert(layer.name.name.clone(), bound);
            }
        }
        layers
    }

    /// Resolves a layer expression (`linear(64, 10)`, `relu`, `Block(64)`) to
    /// its callee and argument values.
    fn bind_layer(
        &mut self,
        expr: &'a Expr,
        env: &Env,
        local: Option<&BTreeMap<String, BoundLayer<'a>>>,
    ) -> Option<BoundLayer<'a>> {
        let (name, args): (&crate::ast::Ident, &[crate::ast::Arg]) = match &expr.kind {
            ExprKind::Name(ident) => (ident, &[]),
            ExprKind::Call(call) => (&call.callee, &call.args),
            _ => {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a layer, e.g. `linear(64, 10)` or `relu`".into(),
                    found: describe_expr(expr),
                    span: expr.span,
                    help: None,
                });
                return None;
            }
        };
        let callee = if let Some(builtin) = Builtin::lookup(&name.name) {
            Callee::Builtin(builtin)
        } else if let Some(module) = self.modules.get(name.name.as_str()) {
            if module.kind == ModuleKind::Model {
                self.errors.push(CheckError::Unsupported {
                    message: format!(
                        "`{}` is a model; only modules can be used as layers",
                        name.name
                    ),
                    span: name.span,
                    help: Some(format!("declare it as `module {}`", name.name)),
                });
                return None;
            }
            Callee::Module(module)
        } else {
            let mut candidates: Vec<&str> = BUILTIN_NAMES.to_vec();
            candidates.extend(self.modules.keys().map(String::as_str));
            if let Some(local) = local {
                candidates.extend(local.keys().map(String::as_str));
            }
            self.errors.push(CheckError::UnknownName {
                kind: "layer or module",
                name: name.name.clone(),
                span: name.span,
                help: did_you_mean(&name.name, candidates),
            });
            return None;
        };
        let sig = match &callee {
            Callee::Builtin(b) => b.signature(),
            Callee::Module(m) => self.module_signature(m)?,
        };
        let values = bind(&name.name, expr.span, &sig, args, env, &mut self.errors)?;
        if let Callee::Builtin(b) = &callee {
            if let Err(err) = b.validate(&values, expr.span) {
                self.errors.push(err);
                return None;
            }
        }
        Some(BoundLayer {
            callee,
            sig,
            values,
            span: expr.span,
        })
    }

    /// The signature of a user module, from its parameter list; `None` when
    /// a parameter is ill-typed (reported once), to avoid follow-on errors.
    fn module_signature(&mut self, module: &ModuleDef) -> Option<Vec<ParamSig>> {
        let mut sig = Vec::new();
        let mut ok = true;
        for param in &module.params {
            let Some(ty) = Ty::from_name(&param.ty.name) else {
                self.errors.push(CheckError::UnknownName {
                    kind: "type",
                    name: param.ty.name.clone(),
                    span: param.ty.span,
                    help: did_you_mean(&param.ty.name, ["int", "float", "bool", "str"]).or_else(
                        || Some("parameter types are `int`, `float`, `bool` and `str`".into()),
                    ),
                });
                ok = false;
                continue;
            };
            let default = match &param.default {
                None => None,
                Some(expr) => match eval(expr, &Env::new()) {
                    Ok(value) if ty.accepts(&value) => Some(value),
                    Ok(value) => {
                        self.errors.push(CheckError::TypeMismatch {
                            expected: format!("{} for `{}`", ty.describe(), param.name.name),
                            found: value.describe(),
                            span: expr.span,
                            help: None,
                        });
                        ok = false;
                        None
                    }
                    Err(err) => {
                        self.errors.push(err);
                        ok = false;
                        None
                    }
                },
            };
            sig.push(ParamSig {
                name: param.name.name.clone(),
                ty,
                default,
            });
        }
        ok.then_some(sig)
    }

    /// Applies one stage of a chain (the `index`th after the input).
    fn apply_stage(
        &mut self,
        stage: &'a Expr,
        index: usize,
        layers: &BTreeMap<String, BoundLayer<'a>>,
        env: &Env,
        scope: &str,
        input: Shape,
    ) -> Option<Shape> {
        // A named layer of this module is used by its name; an inline layer
        // is named by its position, as in PyTorch's nn.Sequential.
        let (bound, path) = match &stage.kind {
            ExprKind::Name(ident) if layers.contains_key(&ident.name) => {
                (layers[&ident.name].clone(), join_path(scope, &ident.name))
            }
            ExprKind::Name(ident) if env.contains_key(&ident.name) => {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a layer".into(),
                    found: format!("the parameter `{}`", ident.name),
                    span: stage.span,
                    help: None,
                });
                return None;
            }
            _ => (
                self.bind_layer(stage, env, Some(layers))?,
                join_path(scope, &index.to_string()),
            ),
        };
        match bound.callee {
            Callee::Builtin(builtin) => {
                match builtin.lower(&bound.values, &path, &input, stage.span) {
                    Ok((op, params, output)) => {
                        for param in params {
                            if !self.params.iter().any(|p| p.name == param.name) {
                                self.params.push(param);
                            }
                        }
                        self.nodes.push(Node {
                            name: path,
                            op,
                            output: output.clone(),
                        });
                        Some(output)
                    }
                    Err(err) => {
                        self.errors.push(err);
                        None
                    }
                }
            }
            Callee::Module(module) => {
                let env: Env = bound
                    .sig
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(bound.values.iter().cloned())
                    .collect();
                self.instantiate(module, &env, &path, input, stage.span)
            }
        }
    }

    /// Turns a declared shape into plan dims: numbers stay, names bound to an
    /// `int` parameter take its value, other names are symbols.
    fn resolve_shape(&mut self, shape: &ShapeExpr, env: &Env) -> Shape {
        shape
            .dims
            .iter()
            .map(|dim| match dim {
                DimExpr::Size(n, span) => {
                    if *n < 1 {
                        self.errors.push(CheckError::invalid(
                            format!("a dimension must be at least 1, got {n}"),
                            *span,
                            "here",
                        ));
                    }
                    Dim::Size(*n)
                }
                DimExpr::Name(ident) => match env.get(&ident.name) {
                    Some(Value::Int(n)) => Dim::Size(*n),
                    Some(other) => {
                        self.errors.push(CheckError::TypeMismatch {
                            expected: "an integer dimension".into(),
                            found: other.describe(),
                            span: ident.span,
                            help: None,
                        });
                        Dim::Symbol(ident.name.clone())
                    }
                    None => Dim::Symbol(ident.name.clone()),
                },
            })
            .collect()
    }
}

#[derive(Clone)]
struct BoundLayer<'a> {
    callee: Callee<'a>,
    sig: Vec<ParamSig>,
    values: Vec<Value>,
    #[allow(dead_code)]
    span: Span,
}

fn kind_word(def: &ModuleDef) -> &'static str {
    match def.kind {
        ModuleKind::Model => "model",
        ModuleKind::Module => "module",
    }
}

fn describe_expr(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Int(_) | ExprKind::Float(_) => "a number".into(),
        ExprKind::Str(_) => "a string".into(),
        ExprKind::Bool(_) => "a boolean".into(),
        ExprKind::List(_) => "a list".into(),
        ExprKind::Pipe(_) => "a `|>` chain".into(),
        ExprKind::Name(n) => format!("`{}`", n.name),
        ExprKind::Call(c) => format!("a call of `{}`", c.callee.name),
    }
}

/// Matches `actual` against `declared`, binding the declared symbols.
fn unify(declared: &Shape, actual: &Shape, bindings: &mut BTreeMap<String, Dim>) -> bool {
    if declared.len() != actual.len() {
        return false;
    }
    declared.iter().zip(actual).all(|(d, a)| match d {
        Dim::Size(n) => matches!(a, Dim::Size(m) if m == n),
        Dim::Symbol(s) => match bindings.get(s) {
            Some(bound) => bound == a,
            None => {
                bindings.insert(s.clone(), a.clone());
                true
            }
        },
    })
}

fn substitute(shape: &Shape, bindings: &BTreeMap<String, Dim>) -> Shape {
    shape
        .iter()
        .map(|d| match d {
            Dim::Symbol(s) => bindings.get(s).cloned().unwrap_or_else(|| d.clone()),
            _ => d.clone(),
        })
        .collect()
}
