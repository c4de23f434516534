//! The calls a setting's value may be (`adamw(lr: 3e-4)`, `cosine`,
//! `norm(1.0)`, `csv("digits.csv")`), by name, with their parameters: what
//! an editor offers inside the call and shows as its signature. The
//! tables are the checker's own, so the two cannot disagree.

use super::args::{signature_text, ParamSig};

/// A call a setting's value may be, and its parameters.
#[derive(Debug, Clone)]
pub struct SettingCall {
    /// The setting it is a value of: `optimizer`, `schedule`, `loss`,
    /// `clip`, `sync`, `source`.
    pub setting: &'static str,
    pub name: &'static str,
    pub params: Vec<ParamSig>,
}

impl SettingCall {
    /// `adamw(lr: float, betas: [float, float] = [0.9, 0.999], …)`.
    pub fn text(&self) -> String {
        format!("{}({})", self.name, signature_text(&self.params))
    }
}

/// The calls of one setting: each name and its parameters.
type Calls = Vec<(&'static str, Vec<ParamSig>)>;

/// Every call a setting's value may be.
pub fn setting_calls() -> Vec<SettingCall> {
    let tables: [(&'static str, Calls); 6] = [
        ("optimizer", super::optimizer::signatures().collect()),
        ("schedule", super::schedule::signatures().collect()),
        ("loss", super::loss::signatures().collect()),
        ("clip", super::settings::clip_signatures().collect()),
        ("sync", super::sync::signatures().collect()),
        ("source", super::data::source_signatures().collect()),
    ];
    tables
        .into_iter()
        .flat_map(|(setting, calls)| {
            calls.into_iter().map(move |(name, params)| SettingCall {
                setting,
                name,
                params,
            })
        })
        .collect()
}

/// The call named `name`, preferring the one of `setting` when two
/// settings share a name.
pub fn setting_call(name: &str, setting: Option<&str>) -> Option<SettingCall> {
    let mut matching: Vec<SettingCall> = setting_calls()
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    let at = matching
        .iter()
        .position(|c| Some(c.setting) == setting)
        .unwrap_or(0);
    (!matching.is_empty()).then(|| matching.swap_remove(at))
}

/// One parameter as a signature shows it: `lr: float`, `eps: float = 1e-8`.
pub fn param_text(param: &ParamSig) -> String {
    signature_text(std::slice::from_ref(param))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_call_is_found_by_name() {
        let adamw = setting_call("adamw", Some("optimizer")).unwrap();
        assert_eq!(adamw.setting, "optimizer");
        let names: Vec<&str> = adamw.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lr", "betas", "eps", "weight_decay"]);
        assert!(adamw
            .text()
            .starts_with("adamw(lr: float, betas: [float, float] = "));
        assert_eq!(setting_call("norm", None).unwrap().setting, "clip");
        assert_eq!(setting_call("diloco", None).unwrap().setting, "sync");
        assert_eq!(setting_call("csv", None).unwrap().setting, "source");
        assert_eq!(setting_call("cosine", None).unwrap().setting, "schedule");
        assert!(
            setting_call("conv2d", None).is_none(),
            "a layer, not a setting's call"
        );
        assert_eq!(setting_call("linear", None).unwrap().setting, "schedule");
        assert_eq!(param_text(&adamw.params[2]), "eps: float = 1e-8");
    }
}
