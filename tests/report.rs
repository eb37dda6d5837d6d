//! `uffd-dirty report`: a real run rendered to HTML and SVG, screenshotted in headless
//! Chromium, and the picture held against what the writer wrote; and the
//! refusals, each one line with the documented exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::ground_truth::run_against_writer;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A hand-built run: one 4-page range, two deltas (for the error and edge-case tests).
const START: &str = r#"{"type":"start","version":1,"pid":7,"page_size":4096,"method":"pagemap-scan","interval_ms":100,"ranges":[{"start":"0x10000","end":"0x14000","pages":4,"mapping":"[heap]","kind":"heap"}],"skipped":[],"arm_method":"pagemap-scan","attach_us":1,"thread_stopped_us":1,"time":"2026-01-01T00:00:00Z"}"#;
const DELTA: &str = r#"{"type":"delta","seq":1,"time":"2026-01-01T00:00:00.100Z","elapsed_ms":100,"dirty_pages":1,"ranges":[{"start":"0x10000","end":"0x11000","pages":1}],"scan_us":5}"#;
const END: &str = r#"{"type":"end","reason":"count","deltas":1,"dirty_pages_total":1,"time":"2026-01-01T00:00:00.101Z"}"#;

fn report(trace: &Path, out: &Path) -> Output {
    uffd_dirty()
        .arg("report")
        .arg(trace)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// The attribute `name` of the first element whose tag contains `marker`.
fn attr(text: &str, marker: &str, name: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the report"));
    let tag = &text[at..at + text[at..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("{marker} has no {name}: {tag}"))
        + key.len();
    tag[from..from + tag[from..].find('"').unwrap()].to_string()
}

fn num(text: &str, marker: &str, name: &str) -> f64 {
    attr(text, marker, name).parse().unwrap()
}

/// Decode a PNG into (width, height, RGB bytes).
fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let line = &buf[y * info.line_size..];
        for x in 0..w {
            let px = &line[x * channels..];
            if channels >= 3 {
                rgb.extend_from_slice(&px[..3]);
            } else {
                rgb.extend_from_slice(&[px[0]; 3]);
            }
        }
    }
    (w, h, rgb)
}

/// 0 for white, 1 for black.
fn darkness(rgb: &[u8], width: usize, x: f64, y: f64) -> f64 {
    let i = (y as usize * width + x as usize) * 3;
    let (r, g, b) = (rgb[i] as f64, rgb[i + 1] as f64, rgb[i + 2] as f64);
    1.0 - (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255.0
}

/// Screenshot `html`. (With `--blink-settings=scriptEnabled=false` headless Chromium writes no
/// screenshot at all; that the picture needs no script is checked on the SVG instead.)
fn screenshot(html: &Path, png: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn artefact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_picture_shows_what_the_writer_wrote() {
    if !kernel_can_track() {
        return;
    }
    if !Path::new(CHROMIUM).exists() {
        skipped(format!(
            "the report screenshot needs {CHROMIUM} (apt-get install chromium; .ci/run does)"
        ));
        return;
    }
    // A diagonal sweep: each burst writes 8 pages, 4 further on than the last (plus 2 random
    // ones), over 64 pages tracked alone (--range), so each row is one page.
    let run = run_against_writer(
        &[
            "--pages=64",
            "--bursts=40",
            "--burst-pages=8",
            "--gap=25ms",
            "--pattern=wave",
        ],
        &[],
        None,
        true,
    );
    let dir = scratch();
    let trace = dir.path().join("trace.ndjson");
    let lines: Vec<String> = run.records.iter().map(|r| r.to_string()).collect();
    std::fs::write(&trace, lines.join("\n") + "\n").unwrap();
    let (html_path, svg_path) = (dir.path().join("report.html"), artefact("report.svg"));
    for out in [&html_path, &svg_path] {
        let o = report(&trace, out);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "report -o {}: {o:?}",
            out.display()
        );
    }
    let html = std::fs::read_to_string(&html_path).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    std::fs::copy(&html_path, artefact("report.html")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    assert!(html.contains(&svg), "the HTML wraps the same SVG");
    assert!(!svg.contains("<script"), "the picture needs no JavaScript");
    let without_xmlns = html.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
    for network in ["http://", "https://", "<link", "@import", " src="] {
        assert!(
            !without_xmlns.contains(network),
            "the report refers to the network: {network}"
        );
    }
    assert!(html.contains("<table id=\"totals\">") && html.contains("<td>[anon]</td>"));

    let png = artefact("report.png");
    let _ = std::fs::remove_file(&png);
    let (width, height) = (num(&svg, "<svg", "width"), num(&svg, "<svg", "height"));
    screenshot(&html_path, &png, width as u32, height as u32 + 200);
    let (png_w, _, rgb) = decode_png(&png);

    // The geometry, from the report itself; the SVG sits at the page's top left.
    let g = "id=\"heatmap\"";
    let (x0, y0) = (num(&html, g, "data-x"), num(&html, g, "data-y"));
    let (cell_w, row_h) = (
        num(&html, g, "data-width") / num(&html, g, "data-columns"),
        num(&html, g, "data-height") / num(&html, g, "data-rows"),
    );
    let pages_per_row = num(&html, g, "data-pages-per-row") as u64;
    assert_eq!(
        num(&html, g, "data-deltas-per-column"),
        1.0,
        "one column per delta"
    );
    assert_eq!(pages_per_row, 1, "one row per page");
    let band_start = u64::from_str_radix(
        attr(&html, "class=\"band\"", "data-start").trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(band_start, run.base, "the only band is the writer's region");

    // Per delta, the pages the writer certainly wrote in it (bursts wholly between the two
    // harvests) and those it certainly did not (no burst near the delta's window wrote them).
    let slack = 1_000_000;
    let (start_ns, deltas) = deltas_in(&run.records, run.base, 64);
    let (mut dark, mut light) = (Vec::new(), Vec::new());
    for (k, d) in deltas.iter().enumerate() {
        let (prev_start, prev_end) = match k {
            0 => (start_ns, start_ns),
            _ => (
                deltas[k - 1].t_ns,
                deltas[k - 1].t_ns + deltas[k - 1].scan_ns,
            ),
        };
        let this_end = d.t_ns + d.scan_ns;
        let inside = |w: &&PageWrite| w.start_ns > prev_end + slack && w.end_ns + slack < d.t_ns;
        let near =
            |w: &&PageWrite| w.end_ns + slack >= prev_start && w.start_ns <= this_end + slack;
        let written: Vec<u64> = run.writes.iter().filter(inside).map(|w| w.page).collect();
        for page in 0..64 {
            let (x, y) = (
                x0 + (k as f64 + 0.5) * cell_w,
                y0 + (page as f64 + 0.5) * row_h,
            );
            let shade = darkness(&rgb, png_w, x, y);
            if written.contains(&page) {
                dark.push((k, page, shade));
            } else if !run.writes.iter().filter(near).any(|w| w.page == page) {
                light.push((k, page, shade));
            }
        }
    }
    eprintln!(
        "{} deltas; {} cells certainly written, {} certainly not",
        deltas.len(),
        dark.len(),
        light.len()
    );
    assert!(
        dark.len() >= 100 && light.len() >= 500,
        "too few cells to judge"
    );
    let pale: Vec<_> = dark.iter().filter(|c| c.2 < 0.6).collect();
    let shaded: Vec<_> = light.iter().filter(|c| c.2 > 0.05).collect();
    assert!(
        pale.is_empty(),
        "written cells drawn pale (delta, page, darkness): {pale:?}"
    );
    assert!(
        shaded.is_empty(),
        "unwritten cells drawn shaded (delta, page, darkness): {shaded:?}"
    );
}

#[test]
fn stdin_a_cut_last_line_and_no_deltas() {
    let dir = scratch();
    let out = dir.path().join("r.svg");
    // stdin, with the last line cut short: a warning, and the report.
    let mut child = uffd_dirty()
        .args(["report", "-", "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = format!("{START}\n{DELTA}\n{}", &DELTA[..40]);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("stdin line 3 is cut short"), "{stderr}");
    let svg = std::fs::read_to_string(&out).unwrap();
    assert_eq!(attr(&svg, "id=\"heatmap\"", "data-deltas"), "1");
    assert!(svg.contains("no end record"));

    // No delta: an empty heatmap that says so.
    let trace = dir.path().join("t.ndjson");
    std::fs::write(&trace, format!("{START}\n{END}\n")).unwrap();
    let html = dir.path().join("r.html");
    let o = report(&trace, &html);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no delta"));
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("no deltas recorded")
    );
}

#[test]
fn refusals_are_one_line_with_the_right_exit_code() {
    let dir = scratch();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write("good.ndjson", format!("{START}\n{DELTA}\n{END}\n"));
    let cases: Vec<(PathBuf, &str, i32, &str)> = vec![
        (
            dir.path().join("missing.ndjson"),
            "r.html",
            2,
            "does not exist",
        ),
        (
            dir.path().to_path_buf(),
            "r.html",
            2,
            "is a directory: give the file `uffd-dirty track --format json` wrote",
        ),
        (
            good.clone(),
            "r.png",
            2,
            "name the output file .html or .svg",
        ),
        (
            write(
                "garbage.ndjson",
                format!("{START}\n{DELTA}\nhello\n{END}\n"),
            ),
            "r.html",
            1,
            "garbage.ndjson line 3: not JSON",
        ),
        (
            write("nostart.ndjson", format!("{DELTA}\n{END}\n")),
            "r.html",
            1,
            "line 1: a record before the start record",
        ),
        (
            write("empty.ndjson", String::new()),
            "r.html",
            1,
            "has no start record",
        ),
        (
            write(
                "v2.ndjson",
                format!("{}\n", START.replace("\"version\":1", "\"version\":2")),
            ),
            "r.html",
            1,
            "version 2 is not supported",
        ),
    ];
    for (trace, out, code, says) in cases {
        let o = report(&trace, &dir.path().join(out));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{}: {stderr}", trace.display());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("uffd-dirty: ") && stderr.contains(says),
            "{}: expected {says:?} in {stderr}",
            trace.display()
        );
        assert!(
            !dir.path().join(out).exists(),
            "no report is written on error"
        );
    }
}

#[test]
fn unbounded_inputs_and_other_formats_are_one_line_errors() {
    let dir = scratch();
    let out = dir.path().join("r.html");
    let run = |trace: &str, stdin: Stdio, env: Option<&str>| {
        let t0 = std::time::Instant::now();
        let mut cmd = uffd_dirty();
        cmd.args(["report", trace, "-o"]).arg(&out).stdin(stdin);
        if let Some(max) = env {
            cmd.env("UFFD_DIRTY_MAX_SPOOL", max);
        }
        let o = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{trace}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{trace}");
        assert!(!out.exists(), "no report is written on error");
        stderr
    };
    // A file without a newline: the first line's bound, not memory, ends it.
    let e = run("/dev/zero", Stdio::null(), None);
    assert!(e.contains("/dev/zero line 1 is longer than 64 MiB"), "{e}");
    // The same on stdin, before it is all copied.
    let zeros = dir.path().join("zeros");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let e = run("-", std::fs::File::open(&zeros).unwrap().into(), None);
    assert!(e.contains("stdin line 1 is longer than 64 MiB"), "{e}");
    // Short lines, but more of them than the spool takes (lowered from 1 GiB for the test).
    let blank = dir.path().join("blank");
    std::fs::write(&blank, format!("{}\n", " ".repeat(4095)).repeat(2048)).unwrap();
    let e = run(
        "-",
        std::fs::File::open(&blank).unwrap().into(),
        Some("2097152"),
    );
    assert!(
        e.contains("reading stdin: more than 2 MiB") && e.contains("save the trace to a file"),
        "{e}"
    );
    // The other formats of `track`, named instead of serde's view of them.
    let bitmap = dir.path().join("run.bitmap");
    std::fs::write(&bitmap, "1 0x10000 0x14000 01\n2 0x10000 0x14000 00\n").unwrap();
    let e = run(bitmap.to_str().unwrap(), Stdio::null(), None);
    assert!(
        e.contains("run.bitmap line 1: not JSON but a line of `track --format bitmap` output")
            && !e.contains("Envelope"),
        "{e}"
    );
    let number = dir.path().join("number.ndjson");
    std::fs::write(&number, "7\n").unwrap();
    let e = run(number.to_str().unwrap(), Stdio::null(), None);
    assert!(
        e.contains("line 1: JSON a number, not a uffd-dirty record") && !e.contains("Envelope"),
        "{e}"
    );
}

#[test]
fn a_report_can_go_to_stdout() {
    let dir = scratch();
    let trace = dir.path().join("t.ndjson");
    std::fs::write(&trace, format!("{START}\n{DELTA}\n{END}\n")).unwrap();
    for (o, format, starts) in [
        ("-", None, "<!DOCTYPE html>"),
        ("/dev/stdout", None, "<!DOCTYPE html>"),
        ("-", Some("svg"), "<svg"),
        ("/proc/self/fd/1", Some("svg"), "<svg"),
    ] {
        let mut cmd = uffd_dirty();
        cmd.current_dir(dir.path())
            .arg("report")
            .arg(&trace)
            .args(["-o", o]);
        if let Some(f) = format {
            cmd.args(["--format", f]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "-o {o}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.trim_start().starts_with(starts),
            "-o {o}: {stdout:.80}"
        );
    }
    assert!(!dir.path().join("-").exists(), "a file named - was written");
}
