use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match uffd_dirty::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match uffd_dirty::cli::one_line_error(&err) {
            Some(line) => {
                eprintln!("uffd-dirty: {line}");
                return std::process::ExitCode::from(u8::from(
                    uffd_dirty::exit::ExitCode::UsageError,
                ));
            }
            None => err.exit(),
        },
    };
    match uffd_dirty::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::from(code)),
        Err(err) => {
            // Names the target chose may be in the chain: nothing in it acts on the terminal.
            eprintln!(
                "uffd-dirty: {}",
                uffd_dirty::maps::visible(&format!("{err:#}"))
            );
            std::process::ExitCode::from(u8::from(uffd_dirty::exit::code_for(&err)))
        }
    }
}
