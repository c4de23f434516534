//! The typed syntax tree that `syntax` produces and `check` reads.
//!
//! Every node carries a [`Span`]. Nothing here knows what a layer or a setting
//! means: that is the checker's job.

use crate::span::Span;

/// A user-chosen name with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

impl File {
    /// Its `module` and `model` definitions, in file order.
    pub fn modules(&self) -> impl Iterator<Item = &ModuleDef> {
        self.items.iter().filter_map(|item| match item {
            Item::Module(def) => Some(def),
            _ => None,
        })
    }

    /// Whether it defines a module, model or data source named `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.items.iter().any(|item| match item {
            Item::Module(def) => def.name.name == name,
            Item::Data(data) => data.name.name == name,
            _ => false,
        })
    }
}

/// `import "path"`: the modules and models of the file at `path`
/// (relative to the importing file).
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: String,
    /// The string, quotes included.
    pub path_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `import "blocks.dtl"`
    Import(Import),
    /// `module Name(params) { layers; forward(...) -> [...] { ... } }` or
    /// `model Name { ... }`
    Module(ModuleDef),
    /// `data name { source = csv("file.csv") ... }`
    Data(DataDef),
    /// `train { key = value ... }`
    Train(SettingsBlock),
    /// `parallel { key = value ... }`
    Parallel(SettingsBlock),
    /// `test name { Block(64) on [4, 64] gives [4, 64]; gradcheck }`
    Test(TestDef),
}

/// A module test: a layer or module applied to an input of a given shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDef {
    pub name: Ident,
    /// `Block(64, 128)` or `relu`.
    pub subject: Expr,
    pub input: ShapeExpr,
    pub output: ShapeExpr,
    /// `grads_reach_all_params`, `gradcheck`.
    pub options: Vec<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// `module`: a reusable building block with parameters.
    Module,
    /// `model`: the network being trained.
    Model,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleDef {
    pub kind: ModuleKind,
    /// The `module`/`model` keyword.
    pub keyword: Span,
    pub name: Ident,
    pub params: Vec<Param>,
    pub layers: Vec<LayerDef>,
    pub forwards: Vec<Forward>,
    pub span: Span,
}

/// `d_in: int` or `p: float = 0.1`
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Ident,
    pub default: Option<Expr>,
    pub span: Span,
}

/// `fc = linear(d_in, d_out)`
#[derive(Debug, Clone, PartialEq)]
pub struct LayerDef {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `forward(x: [B, 64]) -> [B, 10] { let h = x |> fc; h + x }`
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub input: Ident,
    pub input_shape: ShapeExpr,
    pub output_shape: ShapeExpr,
    pub lets: Vec<LetDef>,
    pub body: Expr,
    pub span: Span,
}

/// `let h = x |> norm`
#[derive(Debug, Clone, PartialEq)]
pub struct LetDef {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `[B, 64]`
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeExpr {
    pub dims: Vec<DimExpr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DimExpr {
    /// `64`
    Size(i64, Span),
    /// `B` (symbolic) or `d_in` (a module parameter)
    Name(Ident),
    /// `d / heads`: arithmetic on sizes and module parameters.
    Expr(Box<Expr>),
}

impl DimExpr {
    pub fn span(&self) -> Span {
        match self {
            DimExpr::Size(_, span) => *span,
            DimExpr::Name(ident) => ident.span,
            DimExpr::Expr(expr) => expr.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `64`
    Int(i64),
    /// `3e-3`
    Float(f64),
    /// `"data/digits.csv.gz"`
    Str(String),
    /// `true`
    Bool(bool),
    /// `relu`, `x`, `d_in`
    Name(Ident),
    /// `linear(64, 10, bias: false)`
    Call(Call),
    /// `x |> fc |> relu`: stages applied left to right (the first element
    /// is the input).
    Pipe(Vec<Expr>),
    /// `x + h`: element-wise sum of tensors of one shape, or of numbers.
    Add(Vec<Expr>),
    /// `d - 1`, `4 * d`, `d / heads` on numbers; `a * b` is also the
    /// element-wise product of tensors of one shape.
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `repeat 4 { Block(128) }`: a stage made of `count` copies of a chain.
    Repeat {
        count: i64,
        count_span: Span,
        body: Vec<Expr>,
    },
    /// `[0.9, 0.999]`
    List(Vec<Expr>),
}

/// The operators besides `+` (which is [`ExprKind::Add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Sub,
    Mul,
    /// Exact division: a remainder is an error.
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
}

/// A positional (`64`) or keyword (`bias: false`) argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// `data digits { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct DataDef {
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// The body of `train { ... }` or `parallel { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsBlock {
    pub keyword: Span,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// `key = value`
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}
