//! `man/` and `completions/` are rendered from the clap definitions and checked in. This test
//! renders them again and fails on any difference; `UPDATE_GENERATED=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use crate::cli::{Cli, MAN_SECTIONS};
use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::Shell;

fn roff_escape(line: &str) -> String {
    let s = line.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Plain text to roff: blank-line paragraphs, two-space-indented lines kept verbatim.
fn section(title: &str, body: &str) -> String {
    let mut out = format!(".SH \"{title}\"\n");
    for para in body.split("\n\n") {
        if let Some(code) = para.strip_prefix("  ") {
            out += &format!(".PP\n.nf\n.RS 4\n{}\n.RE\n.fi\n", roff_escape(code));
        } else {
            out += &format!(".PP\n{}\n", roff_escape(&para.replace('\n', " ")));
        }
    }
    out
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The SYNOPSIS line of `cmd` (built), with every option's value placeholder, which
/// clap_mangen's own synopsis leaves out: `uffd-dirty track [-p|--pid PID] … [-- CMD...]`.
pub fn synopsis(cmd: &Command) -> String {
    let mut words = vec![cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string()];
    let value = |a: &Arg| match a.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        None => a.get_id().as_str().to_uppercase(),
    };
    // Options first, then the operands, as man pages write them.
    let (operands, options): (Vec<&Arg>, Vec<&Arg>) = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .partition(|a| a.is_positional());
    for a in options.into_iter().chain(operands) {
        let many = matches!(a.get_action(), ArgAction::Append) || a.is_last_set();
        let mut w = if a.is_positional() {
            let v = format!("{}{}", value(a), if many { "..." } else { "" });
            if a.is_last_set() {
                format!("-- {v}")
            } else {
                v
            }
        } else {
            let mut w = match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("-{s}|--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, Some(l)) => format!("--{l}"),
                (None, None) => continue,
            };
            if matches!(a.get_action(), ArgAction::Set | ArgAction::Append) {
                w = format!("{w} {}", value(a));
            }
            w
        };
        w = if a.is_required_set() && !a.is_positional() {
            w
        } else if a.is_required_set() {
            format!("<{w}>")
        } else {
            format!("[{w}]")
        };
        // A repeatable option: `[-r|--range START-END]...`.
        if many && !a.is_positional() {
            w.push_str("...");
        }
        words.push(w);
    }
    if cmd.has_subcommands() {
        words.push("<COMMAND>".into());
    }
    words.join(" ")
}

/// The command the man pages and completions are rendered from: hidden subcommands (the
/// tests' workloads, the attach helper) and hidden options (`--arm`) left out, since the
/// completion generators list them all.
fn shown(cmd: &Command) -> Command {
    let mut out = Command::new(leak(cmd.get_name()));
    if let Some(v) = cmd.get_version() {
        out = out.version(leak(v));
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    if let Some(a) = cmd.get_long_about() {
        out = out.long_about(a.clone());
    }
    out = out.args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    out = out.groups(cmd.get_groups().cloned());
    out.subcommands(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(shown),
    )
}

/// clap_complete's bash script names each subcommand's case `uffd__subcmd__dirty__subcmd__…`
/// (it turns the `-` of the binary's name into its subcommand separator) where its loop sets
/// `uffd__dirty__subcmd__…`, so nothing after a subcommand completed. Rename the cases.
fn fix_bash(script: String) -> String {
    script.replace("uffd__subcmd__dirty__subcmd__", "uffd__dirty__subcmd__")
}

fn man_page(cmd: clap::Command, with_sections: bool, see_also: &str) -> Vec<u8> {
    // No `help` subcommand in the pages: there is no uffd-dirty-help(1) for it to point to.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let usage = synopsis(&cmd);
    let cmd = cmd.override_usage(usage);
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).unwrap();
    if with_sections {
        for (title, body) in MAN_SECTIONS {
            let body = if *title == "SEE ALSO" {
                format!("{see_also}, {body}")
            } else {
                body.to_string()
            };
            buf.extend_from_slice(section(title, &body).as_bytes());
        }
    }
    buf
}

/// The page of subcommand `sub` of `parent` (`uffd-dirty snapshot`), and those of its own
/// subcommands (`uffd-dirty snapshot verify`), which its page lists.
fn sub_pages(
    root: &Path,
    sub: &Command,
    parent: &str,
    see_also: &str,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) {
    let page = format!("{}-{}", parent.replace(' ', "-"), sub.get_name());
    let invocation = format!("{parent} {}", sub.get_name());
    let sub = sub
        .clone()
        .disable_help_subcommand(true)
        .name(leak(&page))
        .bin_name(&invocation);
    files.push((
        root.join(format!("man/{page}.1")),
        man_page(sub.clone(), true, see_also),
    ));
    for nested in sub.get_subcommands() {
        sub_pages(root, nested, &invocation, &format!("{page}(1)"), files);
    }
}

fn expected_files() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cmd = shown(&Cli::command()).disable_help_subcommand(true);
    let subs: Vec<&Command> = cmd.get_subcommands().collect();
    let pages: Vec<String> = subs
        .iter()
        .map(|s| format!("uffd-dirty-{}(1)", s.get_name()))
        .collect();
    let mut files = vec![(
        root.join("man/uffd-dirty.1"),
        man_page(cmd.clone(), true, &pages.join(", ")),
    )];
    for sub in &subs {
        sub_pages(root, sub, "uffd-dirty", "uffd-dirty(1)", &mut files);
    }
    for (shell, file) in [
        (Shell::Bash, "uffd-dirty.bash"),
        (Shell::Zsh, "_uffd-dirty"),
        (Shell::Fish, "uffd-dirty.fish"),
        (Shell::Elvish, "uffd-dirty.elv"),
        (Shell::PowerShell, "_uffd-dirty.ps1"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut shown(&Cli::command()), "uffd-dirty", &mut buf);
        if shell == Shell::Bash {
            buf = fix_bash(String::from_utf8(buf).unwrap()).into_bytes();
        }
        files.push((root.join("completions").join(file), buf));
    }
    files
}

#[test]
fn man_pages_and_completions_match_the_cli() {
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (path, content) in expected_files() {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated files drifted from the CLI (run `UPDATE_GENERATED=1 cargo test`): {stale:?}"
    );
}
