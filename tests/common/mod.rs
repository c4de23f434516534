//! What the integration tests share: running the binary as a user does, and
//! a short version of the default example.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One run of the binary, with fluent assertions on its outcome.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn dtl(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("the dtl binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Run {
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stdout_has(self, text: &str) -> Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }

    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

pub const EXAMPLE: &str = "examples/digits_mlp.dtl";

/// The default example with fewer steps, in a temp folder.
pub fn short_example(dir: &Path, steps: u32) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
        .unwrap()
        .replace(
            "\"../data/digits.csv.gz\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("steps = 400", &format!("steps = {steps}"))
        .replace("eval_every = 100", "eval_every = 5");
    let path = dir.join("short.dtl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `dtl run FILE --quiet --device cpu --out OUT` and any `extra` arguments.
pub fn train(file: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    dtl(&args)
}
