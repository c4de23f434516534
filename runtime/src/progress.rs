//! Progress on stderr: a bar with steps/s, loss and ETA on a terminal,
//! about twenty plain lines a run otherwise.

use std::io::IsTerminal;

use dtl_compiler::records::{EvalRecord, StepRecord};

/// A progress bar on a terminal; otherwise about twenty plain lines a run.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: u64,
    enabled: bool,
}

impl Progress {
    pub fn new(steps: u64, done: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(steps);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  eta {eta}",
            )
            .expect("the template is valid");
            bar.set_style(style);
            bar.set_position(done);
            bar
        });
        Progress {
            bar,
            every: (steps / 20).max(1),
            enabled,
        }
    }

    pub fn update(&self, record: &StepRecord) {
        match &self.bar {
            Some(bar) => {
                let rate = bar.position() as f64 / bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.1} steps/s  loss {:.4}", record.loss));
                bar.inc(1);
            }
            None if self.enabled && record.step.is_multiple_of(self.every) => {
                eprintln!(
                    "step {:>6}  loss {:.4}  grad_norm {:.4}{}",
                    record.step,
                    record.loss,
                    record.grad_norm,
                    if record.skipped {
                        "  (skipped: not finite)"
                    } else {
                        ""
                    }
                );
            }
            None => {}
        }
    }

    pub fn eval(&self, eval: &EvalRecord) {
        let mut line = format!("step {:>6}  eval_loss {:.4}", eval.step, eval.eval_loss);
        if let Some(accuracy) = eval.eval_accuracy {
            line += &format!("  eval_accuracy {:.2}%", accuracy * 100.0);
        }
        for (key, value) in &eval.measures.0 {
            if key.starts_with("eval_") {
                line += &format!("  {key} {value:.4}");
            }
        }
        if let Some(loss) = eval.get("ema_eval_loss") {
            line += &format!("  ema_eval_loss {loss:.4}");
        }
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
