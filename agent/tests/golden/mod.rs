//! Golden-file comparison for rendered files: `agent/test_data/golden/<name>`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p cluster-lab --test <target>` rewrites the golden files from the current output;
//! review the diff before committing it.

use std::path::PathBuf;

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/golden")
        .join(name)
}

/// Compare `actual` with the golden file `name`, or rewrite it when `UPDATE_GOLDEN=1`.
pub fn check(name: &str, actual: &str) {
    let path = path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading golden file {}: {e}\nrun `UPDATE_GOLDEN=1 cargo test -p cluster-lab --test <this test>` to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs from the rendered output.\n--- golden\n{expected}\n--- rendered\n{actual}\n\
             If the change is intended, run `UPDATE_GOLDEN=1 cargo test -p cluster-lab --test <this test>` and review the diff.",
            path.display()
        );
    }
}
