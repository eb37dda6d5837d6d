use crate::common::*;

#[test]
fn bench_smoke_prints_a_table_for_every_method() {
    if !kernel_can_track() {
        return;
    }
    // Seconds-long smoke run; the full run is `uffd-dirty bench` (see BENCHMARKS.md).
    let out = uffd_dirty()
        .args([
            "bench",
            "--sizes",
            "16M",
            "--fractions",
            "0,0.1",
            "--rounds",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| 16 MiB |"))
        .collect();
    // 2 methods × 2 fractions, then 2 ratio rows.
    assert_eq!(rows.len(), 6, "{text}");
    assert!(
        rows.iter().any(|r| r.contains("| pagemap-scan |"))
            && rows.iter().any(|r| r.contains("| pagemap-read |")),
        "{text}"
    );
    let json = uffd_dirty()
        .args([
            "bench",
            "--sizes",
            "16M",
            "--fractions",
            "0.1",
            "--rounds",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v[0]["harvest_ms_median"].as_f64().unwrap() > 0.0);
}
