//! Where a file's paths lead. A `.dtl` file names data files and initial
//! weights relative to itself; a relative path that climbs out of the
//! project folder (through `..`, or a symbolic link on the way) is a
//! warning, and an error under `dtl check --strict`: a file from elsewhere
//! (a pull request, say) should not reach files outside the project. The
//! project folder is the nearest folder above the file that holds `.git`,
//! or the file's own folder. Absolute paths say where they go and are left
//! alone.

use std::path::{Component, Path, PathBuf};

use super::{CheckError, Lint};
use crate::span::Span;

/// `path` with `.` and `..` resolved without asking the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The project folder of a file in `base_dir` (absolute).
fn project(base_dir: &Path) -> PathBuf {
    let start = std::env::current_dir().map_or(base_dir.to_path_buf(), |cwd| cwd.join(base_dir));
    let start = normalize(&start);
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .unwrap_or(&start)
        .to_path_buf()
}

/// Reports `raw` (as written, relative to `base_dir`) if it leads out of
/// the project folder.
pub(crate) fn check(
    raw: &str,
    base_dir: &Path,
    span: Span,
    strict: bool,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) {
    if Path::new(raw).is_absolute() {
        return;
    }
    let project = project(base_dir);
    let cwd = std::env::current_dir().unwrap_or_default();
    let target = normalize(&cwd.join(base_dir).join(raw));
    let mut outside = !target.starts_with(&project);
    // A link inside the project can still lead out of it.
    if !outside {
        if let (Ok(real), Ok(real_project)) = (target.canonicalize(), project.canonicalize()) {
            outside = !real.starts_with(real_project);
        }
    }
    if !outside {
        return;
    }
    let (path, project) = (raw.to_string(), project.display().to_string());
    if strict {
        errors.push(CheckError::PathOutsideProject {
            path,
            project,
            span,
        });
    } else {
        lints.push(Lint::PathOutsideProject {
            path,
            project,
            span,
        });
    }
}
