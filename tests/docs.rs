//! The language reference keeps up with the language: every built-in layer
//! and every train setting is documented in docs/language.md.

use std::path::Path;

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md")).unwrap()
}

#[test]
fn every_builtin_layer_is_documented() {
    let doc = reference();
    for name in dtl_compiler::check::builtin_names() {
        assert!(
            doc.contains(&format!("`{name}")),
            "docs/language.md does not document `{name}`"
        );
    }
}

#[test]
fn every_train_setting_is_documented() {
    let doc = reference();
    for key in dtl_compiler::check::TRAIN_KEYS {
        assert!(
            doc.contains(&format!("| `{key}`")),
            "docs/language.md has no row for the train setting `{key}`"
        );
    }
}
