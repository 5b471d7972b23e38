use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = homelab::Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match homelab::run(cli, &mut out) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Diagnostics carry their own `error[rule]:` prefix.
            match e {
                homelab::Error::Invalid { .. } => eprintln!("{e}"),
                _ => eprintln!("error: {e}"),
            }
            ExitCode::from(e.code() as u8)
        }
    }
}
