//! Conventions users expect (issue 14): words in the right number, intervals for people,
//! `--quiet`, `--color`, one-line errors for negative numbers, a second tracker told why, and
//! the docs held to the program: the README's example output, the man pages' SYNOPSIS and SEE
//! ALSO, and the formats `--help` offers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// `line` with its numbers as `N`, its spaces collapsed, its plurals and end reason made
/// alike: what a line of human output looks like, whatever it measured.
fn shape(line: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    let mut out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for (plural, singular) in [
        ("ranges", "range"),
        ("pages", "page"),
        ("deltas", "delta"),
        ("writes", "write"),
    ] {
        out = out.replace(plural, singular);
    }
    if let (Some(a), Some(b)) = (out.find("stopped ("), out.find(") after")) {
        out.replace_range(a + "stopped (".len()..b, "R");
    }
    out
}

/// The kind of a human-output line, and its shape up to where its contents vary (a delta's
/// top mappings, a table row's name).
fn kind_and_shape(line: &str) -> Option<(&'static str, String)> {
    let s = shape(line);
    if s.starts_with("tracking PID") {
        Some(("header", s))
    } else if s.starts_with("N:N:N #") {
        let cut = s.find("MiB/s").map_or(s.len(), |i| i + "MiB/s".len());
        Some(("delta", s[..cut].to_string()))
    } else if s.starts_with("mapping size MiB") {
        Some(("table header", s))
    } else if s.starts_with("stopped (") {
        Some(("end", s))
    } else {
        None
    }
}

#[test]
fn the_readme_human_example_has_the_programs_columns() {
    if !kernel_can_track() {
        return;
    }
    let readme = read("README.md");
    let example = readme
        .split_once("Human output (the default)")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README's human-output example");
    let documented: BTreeSet<_> = example.lines().filter_map(kind_and_shape).collect();

    let out = uffd_dirty()
        .args(["demo", "--duration", "600ms", "--color", "never"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let real: BTreeSet<_> = stdout.lines().filter_map(kind_and_shape).collect();
    fn kinds(set: &BTreeSet<(&'static str, String)>) -> BTreeSet<&'static str> {
        set.iter().map(|k| k.0).collect()
    }
    assert_eq!(
        kinds(&documented),
        kinds(&real),
        "the README's example shows other kinds of lines than the program prints:\n{stdout}"
    );
    for line in &documented {
        assert!(
            real.contains(line),
            "README line shaped {line:?} matches no line the program printed:\n{stdout}"
        );
    }
}

#[test]
fn quiet_leaves_out_the_table_and_the_notes() {
    if !kernel_can_track() {
        return;
    }
    let run = |quiet: bool| {
        let mut cmd = uffd_dirty();
        cmd.args(["demo", "--duration", "500ms", "--interval", "100ms"]);
        if quiet {
            cmd.arg("--quiet");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (stdout, stderr) = run(false);
    assert!(stdout.contains("peak MiB/s"), "{stdout}");
    assert!(stderr.contains("uffd-dirty demo:"), "{stderr}");
    let (stdout, stderr) = run(true);
    assert!(
        !stdout.contains("peak MiB/s"),
        "--quiet printed the table: {stdout}"
    );
    assert!(
        stdout.contains(" MiB/s "),
        "--quiet left out the deltas: {stdout}"
    );
    assert!(
        stdout.contains("stopped ("),
        "--quiet left out the end line: {stdout}"
    );
    assert!(stderr.is_empty(), "--quiet printed notes: {stderr}");

    let out = uffd_dirty().args(["check", "--quiet"]).output().unwrap();
    assert!(out.stderr.is_empty(), "check --quiet: {out:?}");
}

#[test]
fn color_always_colours_a_pipe_and_auto_and_never_do_not() {
    let esc = |args: &[&str], no_color: bool| {
        let mut cmd = uffd_dirty();
        cmd.args(args);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().unwrap();
        out.stdout.contains(&0x1b)
    };
    // check colours its status words.
    assert!(esc(&["check", "--color", "always"], false));
    assert!(
        esc(&["check", "--color=always"], true),
        "always wins over NO_COLOR"
    );
    assert!(!esc(&["check"], false), "auto coloured a pipe");
    assert!(!esc(&["check", "--color", "never"], false));
    if !kernel_can_track() {
        return;
    }
    let demo = ["demo", "--duration", "300ms", "--interval", "100ms"];
    assert!(esc(&[&demo[..], &["--color", "always"]].concat(), false));
    assert!(!esc(&demo, false), "auto coloured a pipe");
    assert!(!esc(&[&demo[..], &["--color", "never"]].concat(), false));
    // Never into NDJSON, whatever --color says.
    assert!(!esc(
        &[&demo[..], &["--color", "always", "--format", "json"]].concat(),
        false
    ));
}

#[test]
fn counts_are_in_the_right_number_and_intervals_read_for_people() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let pid = sleeper.pid();
    // One range: the stack.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let stack = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let (a, b) = stack.split_once('-').unwrap();
    let range = format!("0x{a}-0x{b}");
    let out = uffd_dirty()
        .args([
            "track", "--pid", &pid, "--range", &range, "-n", "1", "-i", "1500ms",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": 1 range, "), "{stdout}");
    assert!(stdout.contains(", every 1.5 s;"), "{stdout}");
    assert!(stdout.contains(" after 1 delta: "), "{stdout}");
    assert!(
        !stdout.contains(" ms;") || stdout.contains("attach took"),
        "{stdout}"
    );

    // The longest interval, in years rather than milliseconds; compare in the same words.
    let out = uffd_dirty()
        .args([
            "track", "--pid", &pid, "--range", &range, "-d", "300ms", "-i", "100y",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(", every 100 years;"), "{stdout}");
    assert!(stdout.contains(" after 1 delta: "), "{stdout}");
}

#[test]
fn negative_numbers_are_one_line_usage_errors_without_clap_s_tip() {
    for args in [
        &["track", "--pid", "1", "--interval", "-5"][..],
        &["track", "--pid", "1", "--interval=-5"],
        &["track", "--pid", "1", "-i", "-5"],
        &["track", "--pid", "1", "--count", "-5"],
        &["track", "--pid", "1", "--count=-5"],
        &["track", "--pid", "1", "--duration", "-5s"],
        &["track", "--pid", "-5"],
        &["track", "--pid", "1", "-5"],
        &["compare", "--pid", "1", "-n", "-5"],
        &["demo", "--interval", "-5"],
        &["bench", "--rounds", "-5"],
        &["bench", "--run-time", "-5"],
    ] {
        let out = uffd_dirty().args(args).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("'-- "),
            "{args:?} suggests a command: {stderr}"
        );
        assert!(!stderr.contains("at 0"), "{args:?}: {stderr}");
        assert!(stderr.starts_with("uffd-dirty: "), "{args:?}: {stderr}");
    }
}

#[test]
fn a_second_tracker_on_the_same_process_says_why_it_cannot() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let mut first = uffd_dirty()
        .args(["track", "--pid", &sleeper.pid(), "-f", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Attached once its start record is out.
    let mut stdout = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("\"start\""), "{line}");
    let out = uffd_dirty()
        .args(["track", "--pid", &sleeper.pid(), "-n", "1"])
        .output()
        .unwrap();
    // The first tracker stops (SIGINT, a clean stop) whatever the second did.
    // SAFETY: kill with our own child's PID.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let status = first.wait().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("could be registered: "), "{stderr}");
    assert!(
        stderr.contains("already registered by another userfaultfd"),
        "no cause given: {stderr}"
    );
    assert!(status.success(), "the first tracker: {status:?}");
    std::thread::sleep(Duration::from_millis(10));
}

/// Every `uffd-dirty…(N)` page a man page refers to exists in man/.
#[test]
fn man_pages_refer_only_to_pages_that_exist() {
    let dir = Path::new(ROOT).join("man");
    let mut pages = BTreeSet::new();
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        pages.insert(path.file_name().unwrap().to_string_lossy().to_string());
        texts.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
    }
    for (path, text) in texts {
        let text = text.replace("\\-", "-");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("uffd-dirty") {
            rest = &rest[i..];
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            let after = &rest[name_end..];
            if let Some(section) = after
                .strip_prefix('(')
                .and_then(|a| a.split_once(')'))
                .map(|(s, _)| s)
                .filter(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_digit()))
            {
                let page = format!("{name}.{section}");
                assert!(
                    pages.contains(&page),
                    "{} refers to {name}({section}), which is not in man/",
                    path.display()
                );
            }
            rest = &rest[name_end..];
        }
    }
}

/// Each man page's SYNOPSIS shows the value every option takes, as its OPTIONS list does.
#[test]
fn man_synopses_show_value_placeholders() {
    for entry in std::fs::read_dir(Path::new(ROOT).join("man")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("\\-", "-");
        let synopsis = text
            .split_once(".SH SYNOPSIS\n")
            .and_then(|(_, r)| r.split_once("\n.SH"))
            .map(|(s, _)| {
                s.replace("\\fB", "")
                    .replace("\\fI", "")
                    .replace("\\fR", "")
            })
            .unwrap_or_else(|| panic!("{}: no SYNOPSIS", path.display()));
        // `\fB--interval\fR \fI<DURATION>\fR` in OPTIONS.
        for line in text.lines().filter(|l| l.contains("\\fI<")) {
            let plain = line
                .replace("\\fB", "")
                .replace("\\fI", "")
                .replace("\\fR", "");
            let Some(long) = plain.split_whitespace().find(|w| w.starts_with("--")) else {
                continue;
            };
            let long = long.trim_end_matches(',');
            let value = plain
                .split('<')
                .nth(1)
                .and_then(|v| v.split('>').next())
                .unwrap();
            assert!(
                synopsis.contains(&format!("{long} {value}")),
                "{}: SYNOPSIS lacks `{long} {value}`: {synopsis}",
                path.display()
            );
        }
    }
}

/// `--help` offers only the formats a command prints: each one it lists is accepted (a
/// refusal names --format), and commands that print no deltas do not describe one.
#[test]
fn help_offers_only_formats_the_command_accepts() {
    for (command, run) in [
        ("check", &["check", "--output", "/dev/null", "--format"][..]),
        // A PID that cannot exist: the format is judged before it.
        ("compare", &["compare", "--pid", "2147483647", "--format"]),
        (
            "demo",
            &[
                "demo",
                "--duration",
                "100ms",
                "--output",
                "/dev/null",
                "--format",
            ],
        ),
    ] {
        let help = uffd_dirty().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        let formats: Vec<String> = help
            .split_once("--format <FORMAT>")
            .map(|(_, r)| r)
            .unwrap()
            .lines()
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with("[default"))
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter_map(|l| l.split(':').next())
            .map(str::to_string)
            .collect();
        assert!(
            formats.contains(&"json".to_string()),
            "{command}: {formats:?}"
        );
        if command != "demo" {
            assert!(
                !help.contains("per delta"),
                "{command} --help describes a per-delta format: {help}"
            );
        }
        for format in &formats {
            let out = uffd_dirty().args(run).arg(format).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("--format"),
                "{command} --help offers --format {format}, which it refuses: {stderr}"
            );
        }
    }
}

/// The README and `--help` say the same about what `--range` leaves out by default.
#[test]
fn range_help_and_readme_agree_on_the_default() {
    let phrase = "every mapping that can ever be";
    let help = uffd_dirty().args(["track", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap().replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains(phrase), "track --help: {help}");
    assert!(!help.contains("whole address space"), "{help}");
    let readme = read("README.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(readme.contains(&format!("default: {phrase}")), "README");
}
