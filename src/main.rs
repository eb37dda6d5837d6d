use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = uffd_dirty::cli::Cli::parse();
    match uffd_dirty::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::from(code)),
        Err(err) => {
            eprintln!("uffd-dirty: {err:#}");
            std::process::ExitCode::from(u8::from(uffd_dirty::exit::code_for(&err)))
        }
    }
}
