//! `dtl calibrate` on this machine, and the prediction on its description
//! checked against steps measured here. Alone in its test binary: cargo
//! runs the binaries one after another, so no other test competes for the
//! cores while this one measures them.

mod common;

use common::dtl;

fn step_of(prediction: &serde_json::Value) -> f64 {
    prediction["step_seconds"].as_f64().unwrap()
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut r = vec![0.0; values.len()];
    for (position, &i) in order.iter().enumerate() {
        r[i] = position as f64;
    }
    r
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() - 1) as f64 / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    cov / var
}

/// This machine calibrated (1 to 4 ranks), then the small GPT of
/// benches/predict.py predicted and measured in six layouts of 1 to 4
/// ranks: the prediction's median error and rank correlation hold looser
/// bounds than the bench's goals (15%, 0.8; it measured 16.6% and 0.93
/// over 24 runs of longer steps, docs/planning.md): CI machines differ
/// and a few steps here include the first one's start-up.
#[test]
fn calibrated_predictions_follow_the_steps_measured_here() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("local.yaml");
    let cluster = cluster.to_str().unwrap();
    dtl(&["calibrate", "-o", cluster, "--ranks", "4"])
        .code(0)
        .stdout_has("wrote");
    let text = std::fs::read_to_string(cluster).unwrap();
    assert!(
        text.contains("share:") && text.contains("measured on"),
        "{text}"
    );
    let file = "benches/predict_gpt.dtl";
    let layouts: [&[&str]; 6] = [
        &[],
        &["parallel.data=2"],
        &["parallel.pipeline=2", "parallel.micro_batches=8"],
        &["parallel.tensor=2"],
        &["parallel.data=4"],
        &[
            "parallel.data=2",
            "parallel.pipeline=2",
            "parallel.micro_batches=2",
        ],
    ];
    let (mut predicted, mut measured) = (Vec::new(), Vec::new());
    for (i, settings) in layouts.into_iter().enumerate() {
        let sets: Vec<&str> = settings.iter().flat_map(|s| ["--set", *s]).collect();
        let mut explain = vec!["explain", file, "--cluster", cluster, "--format", "json"];
        explain.extend(&sets);
        let explained: serde_json::Value =
            serde_json::from_str(&dtl(&explain).code(0).stdout).unwrap();
        predicted.push(step_of(&explained["prediction"]));
        let out = dir.path().join(format!("run-{i}"));
        let mut run = vec![
            "run",
            file,
            "--device",
            "cpu",
            "-q",
            "--set",
            "train.steps=8",
        ];
        run.extend(["--out", out.to_str().unwrap()]);
        run.extend(&sets);
        dtl(&run).code(0);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        measured.push(summary["train_seconds"].as_f64().unwrap() / 8.0);
    }
    let mut errors: Vec<f64> = predicted
        .iter()
        .zip(&measured)
        .map(|(p, m)| (p / m - 1.0).abs())
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = (errors[2] + errors[3]) / 2.0;
    let rho = spearman(&predicted, &measured);
    let table = format!("predicted {predicted:?}\nmeasured {measured:?}");
    assert!(median <= 0.4, "median error {median:.3}\n{table}");
    assert!(rho >= 0.6, "Spearman {rho:.3}\n{table}");
}
