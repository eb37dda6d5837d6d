//! `man/` and `completions/` are rendered from the clap definitions and checked in. This test
//! renders them again and fails on any difference; `UPDATE_GENERATED=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use uffd_dirty::cli::{Cli, MAN_SECTIONS};

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

fn man_page(cmd: clap::Command, with_sections: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).unwrap();
    if with_sections {
        for (title, body) in MAN_SECTIONS {
            buf.extend_from_slice(section(title, body).as_bytes());
        }
    }
    buf
}

fn expected_files() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cmd = Cli::command();
    let mut files = vec![(root.join("man/uffd-dirty.1"), man_page(cmd.clone(), true))];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("uffd-dirty-{}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let sub = sub
            .clone()
            .name(static_name)
            .bin_name(format!("uffd-dirty {}", sub.get_name()));
        files.push((root.join(format!("man/{name}.1")), man_page(sub, true)));
    }
    for (shell, file) in [
        (Shell::Bash, "uffd-dirty.bash"),
        (Shell::Zsh, "_uffd-dirty"),
        (Shell::Fish, "uffd-dirty.fish"),
        (Shell::Elvish, "uffd-dirty.elv"),
        (Shell::PowerShell, "_uffd-dirty.ps1"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "uffd-dirty", &mut buf);
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
