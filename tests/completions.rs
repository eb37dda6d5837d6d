//! The checked-in completion scripts, exercised in the real shells: bash (the script's
//! function called as `complete -F` would, with COMP_WORDS and COMP_CWORD set, and readline's
//! `-o default` filename fallback when it offers nothing), zsh (an interactive zsh in a pty
//! pressing TAB, its candidates captured from `compadd`) and fish (`complete -C`). Comparing
//! generated files with themselves (tests/generated.rs) cannot tell that bash completed
//! nothing after a subcommand, or that hidden commands were offered.

use std::path::Path;
use std::process::Command;

use crate::common::skipped;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The visible subcommands, and the hidden ones no shell may offer.
const SUBCOMMANDS: &[&str] = &[
    "track", "snapshot", "compare", "bench", "demo", "check", "report",
];
const HIDDEN_SUBCOMMANDS: &[&str] = &["writer", "scenario", "bench-target", "attach-helper"];
const TRACK_OPTIONS: &[&str] = &[
    "--pid",
    "--interval",
    "--range",
    "--count",
    "--duration",
    "--format",
    "--output",
    "--quiet",
    "--color",
    "--view",
];

fn have(shell: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {shell}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skipped(format!("{shell} is not installed (.ci/run installs it)"));
    }
    found
}

/// A directory holding a file, to run in: a value completed as a file name would offer it.
fn cwd_with_a_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("somefile"), "").unwrap();
    dir
}

fn run(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().expect("running the shell");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // fish prints `candidate<TAB>description`.
        .map(|l| l.split('\t').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What bash offers for `line` (the cursor at its end), as readline would get it.
fn bash(line: &str, cwd: &Path) -> Vec<String> {
    let script = format!(
        r#"
set -u
source '{ROOT}/completions/uffd-dirty.bash'
spec=$(complete -p uffd-dirty) || exit 9
fn=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
line='{line}'
read -r -a COMP_WORDS <<<"$line"
[[ "$line" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE=$line
COMP_POINT=${{#line}}
cur=${{COMP_WORDS[COMP_CWORD]}}
prev=${{COMP_WORDS[COMP_CWORD-1]}}
COMPREPLY=()
"$fn" uffd-dirty "$cur" "$prev"
# -o default: readline completes file names when the function offers nothing.
if (( ${{#COMPREPLY[@]}} == 0 )) && [[ "$spec" == *"-o default"* ]]; then
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
fi
printf '%s\n' "${{COMPREPLY[@]}}"
"#
    );
    run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(cwd))
}

fn zsh(line: &str, cwd: &Path) -> Vec<String> {
    run(Command::new("timeout")
        .args(["30", "zsh", "-f"])
        .arg(format!("{ROOT}/tests/completions/capture.zsh"))
        .arg(format!("{ROOT}/completions"))
        .arg(line)
        .current_dir(cwd)
        .env("TERM", "xterm"))
}

fn fish(line: &str, cwd: &Path) -> Vec<String> {
    run(Command::new("fish")
        .args(["--no-config", "-c"])
        .arg(format!(
            "source '{ROOT}/completions/uffd-dirty.fish'; complete -C '{line}'"
        ))
        .current_dir(cwd))
}

fn check(shell: &str, complete: fn(&str, &Path) -> Vec<String>) {
    if !have(shell) {
        return;
    }
    let dir = cwd_with_a_file();
    let cwd = dir.path();

    let subcommands = complete("uffd-dirty ", cwd);
    for s in SUBCOMMANDS {
        assert!(
            subcommands.iter().any(|c| c == s),
            "{shell}: `uffd-dirty <TAB>` lacks {s}: {subcommands:?}"
        );
    }
    for s in HIDDEN_SUBCOMMANDS {
        assert!(
            !subcommands.iter().any(|c| c == s),
            "{shell}: `uffd-dirty <TAB>` offers hidden {s}: {subcommands:?}"
        );
    }

    let options = complete("uffd-dirty track --", cwd);
    for o in TRACK_OPTIONS {
        assert!(
            options.iter().any(|c| c == o),
            "{shell}: `uffd-dirty track --<TAB>` lacks {o}: {options:?}"
        );
    }
    assert!(
        !options.iter().any(|c| c == "--arm"),
        "{shell}: `uffd-dirty track --<TAB>` offers the hidden --arm: {options:?}"
    );

    let formats = complete("uffd-dirty check --format ", cwd);
    assert!(
        formats.iter().any(|c| c == "json"),
        "{shell}: check --format: {formats:?}"
    );
    assert!(
        !formats.iter().any(|c| c == "bitmap"),
        "{shell}: check offers bitmap, which it refuses: {formats:?}"
    );

    for line in ["uffd-dirty track --pid ", "uffd-dirty track --interval "] {
        let values = complete(line, cwd);
        assert!(
            !values.iter().any(|c| c == "somefile"),
            "{shell}: `{line}<TAB>` completes file names: {values:?}"
        );
    }
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    check("bash", bash);
}

#[test]
fn zsh_completes_subcommands_and_their_options() {
    check("zsh", zsh);
}

#[test]
fn fish_completes_subcommands_and_their_options() {
    check("fish", fish);
}
