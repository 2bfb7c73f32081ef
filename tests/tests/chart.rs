//! The Helm chart, checked with the real Helm v4 library (`helm-python-sdk`) and the Kubernetes
//! API schemas (`kubernetes-validate --strict`): see `peers/chart_check.py` for every check.

use std::{path::Path, process::Command};

use sonde_tests::{peers_dir, peers_python};

#[test]
fn helm_chart_lints_strict_renders_validates_and_its_schema_rejects_bad_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("sonde-chart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(peers_python())
        .arg(peers_dir().join("chart_check.py"))
        .arg(root.join("helm/sonde"))
        .arg(&out)
        .output()
        .expect("run chart_check.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "chart checks failed:\n{stderr}{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["ok"], true);
    // Every check in the script ran (a check that silently stopped running would lower this).
    assert!(report["checks"].as_u64().unwrap() >= 90, "{report}");
    assert!(
        report["helm_sdk"].as_str().unwrap().starts_with("v4."),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
