//! What a command names on its command line: an experiment (`.dtl`) to
//! check and lower, or a plan compiled earlier (`.yaml`/`.json`) to read
//! back. The one place that tells them apart and applies the command
//! line's requests (`--set`, `--world`, `--no-data`) to each.

use std::path::{Path, PathBuf};

use crate::check::Options;
use crate::overrides::Override;
use crate::plan::Plan;
use crate::Diagnostics;

/// A file the command line names.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A `.dtl` file: compiled on the spot.
    Source(PathBuf),
    /// Anything else: a plan written by `dtl compile` (YAML or JSON).
    Plan(PathBuf),
}

impl Input {
    pub fn of(path: &Path) -> Input {
        if path.extension().is_some_and(|e| e == "dtl") {
            Input::Source(path.to_path_buf())
        } else {
            Input::Plan(path.to_path_buf())
        }
    }
}

/// What the command line asks of a `.dtl` file.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--set PATH=VALUE` overrides.
    pub overrides: Vec<Override>,
    /// The world size the plan is for (`--world`).
    pub world: Option<u64>,
    /// Leave data files unread (`--no-data`).
    pub no_data: bool,
    /// `--strict`: paths out of the project folder are errors.
    pub strict: bool,
    /// What reading the data may cost, and whether its errors may quote
    /// values.
    pub data_limits: crate::dataset::Limits,
}

impl Request {
    /// The check options for the file at `path`: data paths start from its
    /// folder.
    pub fn options(&self, path: &Path) -> Options {
        let mut options = crate::options_for(path, !self.no_data);
        options.overrides = self.overrides.clone();
        options.world = self.world.into_iter().collect();
        options.strict = self.strict;
        options.data_limits = self.data_limits.clone();
        options
    }
}

/// `--data-budget SIZE[,SECONDS]`: `2GiB`, `500MB,30s`, `1048576`.
pub fn parse_budget(text: &str) -> Result<crate::dataset::Limits, String> {
    let (size, seconds) = match text.split_once(',') {
        Some((size, seconds)) => (size.trim(), Some(seconds.trim())),
        None => (text.trim(), None),
    };
    let bytes = parse_size(size)?;
    let seconds = match seconds {
        None => crate::dataset::read::CHECK_SECONDS,
        Some(s) => s
            .trim_end_matches('s')
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .ok_or_else(|| format!("`{s}` is not a time in seconds (e.g. 30s)"))?,
    };
    Ok(crate::dataset::Limits {
        bytes: Some(bytes),
        seconds: Some(seconds),
        ..Default::default()
    })
}

/// A size in bytes: `24GiB`, `500MB`, `1048576`.
pub fn parse_size(size: &str) -> Result<u64, String> {
    let size = size.trim();
    let split = size
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{size}` is not a size (e.g. 2GiB, 500MB)"))?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown unit `{other}` (B, KB, MB, GB, KiB, MiB, GiB, …)"
            ))
        }
    };
    Ok((number * scale) as u64)
}

/// Why a plan could not be had.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read { path: PathBuf, message: String },
    /// The `.dtl` file has errors (with any warnings).
    Invalid(Diagnostics),
    /// The file is not a plan this dtl reads.
    NotAPlan { path: PathBuf, message: String },
    /// The request does not apply to a compiled plan (`--set`, `--world`).
    NotForPlans { path: PathBuf, what: &'static str },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read { path, message } => {
                write!(f, "cannot read `{}`: {message}", path.display())
            }
            LoadError::Invalid(d) => write!(f, "{}: {} error(s)", d.name, d.error_count()),
            LoadError::NotAPlan { path, message } => {
                write!(f, "`{}` is not a dtl plan: {message}", path.display())
            }
            LoadError::NotForPlans { path, what } => write!(
                f,
                "{what} applies to .dtl files; `{}` is a compiled plan, already for one world size",
                path.display()
            ),
        }
    }
}

/// The plan `input` stands for, with the warnings of its compilation.
pub fn load_plan(input: &Input, request: &Request) -> Result<(Plan, Diagnostics), LoadError> {
    match input {
        Input::Source(path) => {
            let text = read(path)?;
            let name = path.display().to_string();
            crate::compile_source_with_warnings(&name, &text, &request.options(path))
                .map_err(LoadError::Invalid)
        }
        Input::Plan(path) => {
            let refused = if !request.overrides.is_empty() {
                Some("--set")
            } else if request.world.is_some() {
                Some("--world")
            } else {
                None
            };
            if let Some(what) = refused {
                return Err(LoadError::NotForPlans {
                    path: path.clone(),
                    what,
                });
            }
            let text = read(path)?;
            let plan = Plan::from_text(&text).map_err(|message| LoadError::NotAPlan {
                path: path.clone(),
                message,
            })?;
            Ok((plan, Diagnostics::new(&path.display().to_string(), "")))
        }
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
