//! Elaboration of the model: every module instance is expanded with its
//! argument values, shapes are inferred through each forward body with a
//! symbolic batch dimension, and the result is the plan's dataflow graph with
//! PyTorch-style parameter names (`0.weight`, `1.fc.bias`, `2.0.attn.in_proj_weight`).
//! The tensor expressions of a forward body are in [`dataflow`].

use std::collections::{BTreeMap, BTreeSet};

mod dataflow;

use super::args::{bind, eval, Env, ParamSig, Ty, Value};
use super::library::{builtin_names, Builtin};
use super::lint::Lint;
use super::CheckError;
use crate::ast::{Arg, DimExpr, Expr, ExprKind, Forward, Ident, ModuleDef, ModuleKind, ShapeExpr};
use crate::plan::{shape_to_string, Block, Dim, ModelPlan, Node, Op, ParamSpec, Shape};
use crate::span::Span;
use crate::util::suggest::did_you_mean;

/// More operations than any real model has: a guard against `repeat 10^9`.
const MAX_NODES: usize = 100_000;
/// 2^40 values (4 TiB in fp32): larger than the memory of any machine.
const MAX_TENSOR_ELEMENTS: i64 = 1 << 40;

/// What a layer expression refers to, once resolved.
#[derive(Clone, Copy)]
enum Callee<'a> {
    Builtin(Builtin),
    Module(&'a ModuleDef),
}

/// A layer with its argument values, ready to be applied.
#[derive(Clone)]
struct BoundLayer<'a> {
    callee: Callee<'a>,
    sig: Vec<ParamSig>,
    values: Vec<Value>,
}

/// A tensor in the graph: the node that produces it and its shape.
#[derive(Clone)]
struct TensorRef {
    node: usize,
    shape: Shape,
}

/// The names visible inside one forward body.
struct Body<'a> {
    scope: String,
    env: Env,
    layers: BTreeMap<String, BoundLayer<'a>>,
    /// Named repeats (`h = repeat 12 { Block(768) }`): their copies are
    /// named after them.
    repeats: BTreeMap<String, &'a Expr>,
    tensors: BTreeMap<String, TensorRef>,
    /// `let`s whose value had an error: uses of them report nothing more.
    poisoned: BTreeSet<String>,
    /// Names read so far, to find `let`s that are never used.
    used: BTreeSet<String>,
    /// Inline stages get their position among the body's inline stages as
    /// their name, as in PyTorch's nn.Sequential.
    next_index: usize,
}

/// The deepest chain of modules inside modules the checker expands: deeper
/// chains are an error, not a stack overflow.
pub const MAX_MODULE_DEPTH: usize = 64;

pub struct Elaborator<'a> {
    modules: &'a BTreeMap<String, &'a ModuleDef>,
    pub errors: Vec<CheckError>,
    pub lints: Vec<Lint>,
    /// Modules instantiated at least once.
    pub used_modules: BTreeSet<String>,
    params: Vec<ParamSpec>,
    buffers: Vec<ParamSpec>,
    /// Names of the tensors above: a layer used twice creates them once.
    tensor_names: BTreeSet<String>,
    nodes: Vec<Node>,
    /// Where each node was written: its layer's call, its `+` or `*`.
    pub node_spans: Vec<Span>,
    /// Each node as the user would name it: `DigitsCnn › ConvBlock(1, 16)
    /// › conv`, `Net › repeat 4, copy 2 › linear`.
    pub node_names: Vec<String>,
    /// The instances and copies being expanded, in those terms.
    display: Vec<String>,
    /// The model is being expanded (its name is `display`'s first).
    in_model: bool,
    /// Modules being expanded, to catch a module that contains itself.
    stack: Vec<String>,
    /// The model's blocks so far, and whether one is being expanded.
    blocks: Vec<Block>,
    in_block: bool,
    /// The block being expanded is a module instance, whose `repeat`s'
    /// copies stand for it when it has any.
    in_instance: bool,
    /// A copy of a `repeat` inside such an instance is being expanded.
    in_copy: bool,
    /// The copies found inside the instance being expanded.
    inner_copies: Vec<Block>,
    /// The shape of every tensor name, as each instance sees it (for
    /// editors: hover).
    pub shapes: Vec<ShapeNote>,
}

/// A tensor name in the source and the shape it has in one module
/// instance; or what a stage of a chain gives there.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeNote {
    pub span: Span,
    pub name: String,
    pub shape: String,
    /// The instance in the user's terms (`Block(64)`, `repeat 2, copy 1 ›
    /// Block(32)`; `""` for the model itself).
    pub scope: String,
    pub kind: NoteKind,
    /// Noted while expanding the model (not a module test's subject).
    pub in_model: bool,
}

/// What a [`ShapeNote`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A tensor name: a forward's input, a `let`.
    Name,
    /// The output of the stage of a chain at `span`.
    Stage,
    /// A module instance at `span`, and the parameter values it creates
    /// (its `shape` is its output's).
    Instance { parameters: u64 },
    /// The value (in `shape`) of the module parameter declared at `span`,
    /// in the instance `scope`.
    Value,
}

impl<'a> Elaborator<'a> {
    pub fn new(modules: &'a BTreeMap<String, &'a ModuleDef>) -> Self {
        Elaborator {
            modules,
            errors: Vec::new(),
            lints: Vec::new(),
            used_modules: BTreeSet::new(),
            params: Vec::new(),
            buffers: Vec::new(),
            tensor_names: BTreeSet::new(),
            nodes: Vec::new(),
            node_spans: Vec::new(),
            node_names: Vec::new(),
            display: Vec::new(),
            in_model: false,
            stack: Vec::new(),
            blocks: Vec::new(),
            in_block: false,
            in_instance: false,
            in_copy: false,
            inner_copies: Vec::new(),
            shapes: Vec::new(),
        }
    }

    /// Runs `expand`, which adds the nodes of a module instance or of a
    /// copy of a `repeat` (`copy`) at `path`, and records them as one of
    /// the model's blocks when `top` (the instance is in the model's own
    /// forward) and no block is being expanded already. An instance whose
    /// forward has a `repeat` (a ViT's encoder, which holds every layer) is
    /// not one block: the outermost copies of its `repeat`s are, each
    /// gathered and recomputed alone, and its other layers lie between.
    pub(super) fn as_block<T>(
        &mut self,
        path: &str,
        (top, copy): (bool, bool),
        expand: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let inner = !top && copy && self.in_instance && !self.in_copy;
        if inner {
            self.in_copy = true;
            let first = self.nodes.len();
            let out = expand(self);
            self.in_copy = false;
            if self.nodes.len() > first {
                self.inner_copies.push(Block {
                    name: path.to_string(),
                    first_node: first,
                    last_node: self.nodes.len() - 1,
                });
            }
            return out;
        }
        if !top || self.in_block {
            return expand(self);
        }
        self.in_block = true;
        self.in_instance = !copy;
        let first = self.nodes.len();
        let out = expand(self);
        self.in_block = false;
        self.in_instance = false;
        let copies = std::mem::take(&mut self.inner_copies);
        if !copies.is_empty() {
            self.blocks.extend(copies);
        } else if self.nodes.len() > first {
            self.blocks.push(Block {
                name: path.to_string(),
                first_node: first,
                last_node: self.nodes.len() - 1,
            });
        }
        out
    }

    /// Expands the model `def` into the plan's model. `None` if anything in it
    /// is wrong (`errors` says what).
    pub fn elaborate_model(&mut self, def: &'a ModuleDef) -> Option<ModelPlan> {
        let forward = self.single_forward(def)?;
        let env = Env::new();
        let input = self.resolve_shape(&forward.input_shape, &env);
        let start = self.start(&input, forward.input_shape.span);
        self.display.push(def.name.name.clone());
        self.in_model = true;
        let result = self.instantiate(def, &env, "", start, def.name.span);
        self.in_model = false;
        self.display.pop();
        self.finish(&def.name.name, input, result?)
    }

    /// Expands a test's subject (`Block(64)`, `relu`) applied to `input`
    /// into a stand-alone model; names are those of the subject's own
    /// `state_dict` (`fc.weight`).
    pub fn elaborate_subject(
        &mut self,
        name: &str,
        subject: &'a Expr,
        input: Shape,
    ) -> Option<ModelPlan> {
        let start = self.start(&input, subject.span);
        let bound = self.bind_layer(subject, &Env::new(), None)?;
        let result = self.apply_bound(&bound, "", start, subject.span)?;
        self.finish(name, input, result)
    }

    /// Node 0: the model's input.
    fn start(&mut self, input: &Shape, span: Span) -> TensorRef {
        self.push_node("input".into(), Op::Input, &[], input.clone(), span)
    }

    /// The elaborated graph as a plan model, unless something was wrong.
    fn finish(&mut self, name: &str, input: Shape, result: TensorRef) -> Option<ModelPlan> {
        if !self.errors.is_empty() {
            return None;
        }
        // Each tensor is at most 2^40 values (checked), so this cannot overflow.
        let parameter_count = self
            .params
            .iter()
            .map(|p| p.shape.iter().product::<i64>() as u64)
            .sum();
        Some(ModelPlan {
            name: name.to_string(),
            input,
            output: result.shape,
            parameter_count,
            parameters: std::mem::take(&mut self.params),
            buffers: std::mem::take(&mut self.buffers),
            nodes: std::mem::take(&mut self.nodes),
            result: result.node,
            blocks: std::mem::take(&mut self.blocks),
        })
    }

    fn single_forward(&mut self, def: &'a ModuleDef) -> Option<&'a Forward> {
        let keyword = |f: &Forward| Span::new(f.span.start, f.span.start + "forward".len());
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
                        span: keyword(extra),
                        first: keyword(first),
                    });
                }
                Some(first)
            }
        }
    }

    /// Expands one instance of `def` with parameter values `env` at module
    /// path `scope`, applied to `input`.
    fn instantiate(
        &mut self,
        def: &'a ModuleDef,
        env: &Env,
        scope: &str,
        input: TensorRef,
        call_span: Span,
    ) -> Option<TensorRef> {
        if let Some(from) = self.stack.iter().position(|m| *m == def.name.name) {
            // The whole cycle, as the expansion went round it: P → Q → R → P.
            let mut cycle: Vec<&str> = self.stack[from..].iter().map(String::as_str).collect();
            cycle.push(&def.name.name);
            let message = match cycle.len() {
                2 => format!("module `{}` contains itself", def.name.name),
                _ => format!(
                    "module `{}` contains itself: {}",
                    def.name.name,
                    cycle
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(" → ")
                ),
            };
            self.errors.push(CheckError::Structure {
                message,
                span: call_span,
                label: "used inside its own definition".into(),
                help: None,
            });
            return None;
        }
        if self.stack.len() >= MAX_MODULE_DEPTH {
            self.errors.push(CheckError::Structure {
                message: format!(
                    "modules nest more than {MAX_MODULE_DEPTH} deep here (`{}` inside {} others)",
                    def.name.name,
                    self.stack.len()
                ),
                span: call_span,
                label: "too deep".into(),
                help: Some("flatten the hierarchy: a module may use `repeat` instead of a chain of wrappers".into()),
            });
            return None;
        }
        let forward = self.single_forward(def)?;
        self.used_modules.insert(def.name.name.clone());
        self.stack.push(def.name.name.clone());
        let result = self.expand_forward(def, forward, env, scope, input, call_span);
        self.stack.pop();
        result
    }

    fn expand_forward(
        &mut self,
        def: &'a ModuleDef,
        forward: &'a Forward,
        env: &Env,
        scope: &str,
        input: TensorRef,
        call_span: Span,
    ) -> Option<TensorRef> {
        let declared_in = self.resolve_shape(&forward.input_shape, env);
        let mut bindings = BTreeMap::new();
        if !unify(&declared_in, &input.shape, &mut bindings) {
            self.errors.push(CheckError::ShapeMismatch {
                expected: shape_to_string(&declared_in),
                found: shape_to_string(&input.shape),
                span: call_span,
                what: format!(
                    "`{}` is given {}",
                    def.name.name,
                    shape_to_string(&input.shape)
                ),
                help: Some(format!(
                    "`{}` is declared as forward({}: {})",
                    def.name.name,
                    forward.input.name,
                    shape_to_string(&declared_in)
                )),
            });
            return None;
        }
        // The output shape may do arithmetic on the input's sizes
        // (`[B, c, H / 2, W / 2]`): they are known now.
        let mut sized = env.clone();
        for (symbol, dim) in &bindings {
            if let (Dim::Size(n), false) = (dim, env.contains_key(symbol)) {
                sized.insert(symbol.clone(), Value::Int(*n));
            }
        }
        let declared_out = self.resolve_shape(&forward.output_shape, &sized);
        let layers = self.bind_layer_defs(def, env);
        let repeats = def
            .layers
            .iter()
            .filter(|l| matches!(l.value.kind, ExprKind::Repeat { .. }))
            .map(|l| (l.name.name.clone(), &l.value))
            .collect();
        self.note_shape(&forward.input, &input.shape);
        let mut body = Body {
            scope: scope.to_string(),
            env: env.clone(),
            layers,
            repeats,
            tensors: BTreeMap::from([(forward.input.name.clone(), input)]),
            poisoned: BTreeSet::new(),
            used: BTreeSet::new(),
            next_index: 0,
        };
        for binding in &forward.lets {
            let name = &binding.name.name;
            if body.tensors.contains_key(name)
                || body.layers.contains_key(name)
                || body.repeats.contains_key(name)
            {
                self.errors.push(CheckError::invalid(
                    format!("`{name}` is already defined in this module"),
                    binding.name.span,
                    "choose another name",
                ));
                continue;
            }
            match self.tensor_expr(&binding.value, &mut body) {
                Some(value) => {
                    self.note_shape(&binding.name, &value.shape);
                    body.tensors.insert(name.clone(), value);
                }
                None => {
                    body.poisoned.insert(name.clone());
                }
            }
        }
        let result = self.tensor_expr(&forward.body, &mut body)?;
        for binding in &forward.lets {
            if !body.used.contains(&binding.name.name)
                && !body.poisoned.contains(&binding.name.name)
            {
                self.lints.push(Lint::UnusedLet {
                    name: binding.name.name.clone(),
                    span: binding.name.span,
                });
            }
        }
        for layer in &def.layers {
            if !body.used.contains(&layer.name.name) {
                self.lints.push(Lint::UnusedModule {
                    kind: "layer",
                    name: layer.name.name.clone(),
                    span: layer.name.span,
                    help: Some(
                        "use it in `forward`, or remove it: a layer that is never applied has no place in the model's parameters"
                            .into(),
                    ),
                });
            }
        }
        let expected = substitute(&declared_out, &bindings);
        if !unify(&expected, &result.shape, &mut bindings.clone()) {
            self.errors.push(CheckError::ShapeMismatch {
                expected: shape_to_string(&expected),
                found: shape_to_string(&result.shape),
                span: forward.output_shape.span,
                what: format!("the body produces {}", shape_to_string(&result.shape)),
                help: Some("make the declared output shape match the last layer".into()),
            });
            return None;
        }
        Some(result)
    }

    pub(super) fn note_shape(&mut self, ident: &Ident, shape: &Shape) {
        self.note(ident.span, &ident.name, shape, NoteKind::Name);
    }

    /// Notes the value a module parameter (declared at `span`) takes in the
    /// instance being expanded.
    pub(super) fn note_value(&mut self, span: Span, name: &str, value: String) {
        let skip = usize::from(self.in_model && !self.display.is_empty());
        self.shapes.push(ShapeNote {
            span,
            name: name.to_string(),
            shape: value,
            scope: self.display[skip.min(self.display.len())..].join(" › "),
            kind: NoteKind::Value,
            in_model: self.in_model,
        });
    }

    /// Notes what `span` gives in the instance being expanded.
    pub(super) fn note(&mut self, span: Span, name: &str, shape: &Shape, kind: NoteKind) {
        // The model's name is left out: its own notes have no scope.
        let skip = usize::from(self.in_model && !self.display.is_empty());
        self.shapes.push(ShapeNote {
            span,
            name: name.to_string(),
            shape: shape_to_string(shape),
            scope: self.display[skip.min(self.display.len())..].join(" › "),
            kind,
            in_model: self.in_model,
        });
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
            if matches!(layer.value.kind, ExprKind::Repeat { .. }) {
                continue; // a named repeat, expanded where it is applied
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
        let (name, args): (&Ident, &[Arg]) = match &expr.kind {
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
            let mut candidates: Vec<&str> = builtin_names().collect();
            candidates.extend(self.modules.keys().map(String::as_str));
            if let Some(local) = local {
                candidates.extend(local.keys().map(String::as_str));
            }
            let help = if name.name == "concat" {
                Some("`concat(a, b)` combines tensors; it is not a stage after `|>`".into())
            } else {
                let is_layer = |n: &str| Builtin::lookup(n).is_some();
                super::foreign::layer(&name.name, is_layer)
                    .or_else(|| did_you_mean(&name.name, candidates))
            };
            self.errors.push(CheckError::UnknownName {
                kind: "layer or module",
                name: name.name.clone(),
                span: name.span,
                help,
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
                DimExpr::Expr(expr) => match eval(expr, env) {
                    Ok(Value::Int(n)) if n >= 1 => Dim::Size(n),
                    Ok(Value::Int(n)) => {
                        self.errors.push(CheckError::invalid(
                            format!("a dimension must be at least 1, got {n}"),
                            expr.span,
                            "here",
                        ));
                        Dim::Size(n)
                    }
                    Ok(other) => {
                        self.errors.push(CheckError::TypeMismatch {
                            expected: "an integer dimension".into(),
                            found: other.describe(),
                            span: expr.span,
                            help: Some(
                                "arithmetic in a shape works on sizes and `int` parameters; a symbol such as `B` stands alone".into(),
                            ),
                        });
                        Dim::Symbol(format!("?{}", expr.span.start))
                    }
                    Err(err) => {
                        self.errors.push(err);
                        Dim::Symbol(format!("?{}", expr.span.start))
                    }
                },
            })
            .collect()
    }
}

/// Whether node `i`'s values are the model input's, moved around but not
/// computed on (reshaped, transposed, selected, concatenated): what an
/// `embedding` may read as indices.
pub(crate) fn passes_input_through(nodes: &[Node], i: usize) -> bool {
    match &nodes[i].op {
        Op::Input => true,
        Op::Reshape { .. }
        | Op::Flatten
        | Op::Transpose { .. }
        | Op::Select { .. }
        | Op::Concat { .. } => nodes[i]
            .inputs
            .iter()
            .all(|&j| passes_input_through(nodes, j)),
        _ => false,
    }
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
        ExprKind::Add(_) => "a sum".into(),
        ExprKind::Binary { op, .. } => format!("a `{}` expression", op.symbol()),
        ExprKind::Repeat { .. } => "`repeat`".into(),
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
