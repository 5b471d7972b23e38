//! The `homelab` binary: parses the command line, runs it, maps an error to its exit code.

use std::process::ExitCode;

use clap::Parser;

/// `RUST_LOG=debug` (or error, warn, info, trace) turns on tracing to stderr.
fn init_tracing() {
    let level = match std::env::var("RUST_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    // `homelab show ... | head` ends quietly when the reader goes away, as CLIs do.
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_tracing();
    let cli = match homelab::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are answers, not errors (clap prints them to stdout).
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            // A usage error is an error (1), never 2: 2 means "the plan has changes".
            let usage = homelab::Error::Usage { message: e.kind().to_string() };
            return ExitCode::from(homelab::exit_code(&Err(usage)));
        }
    };
    // Not locked for the whole run: apply's JSON sink writes to stdout from node threads.
    let mut out = std::io::stdout();
    let result = homelab::run(cli, &mut out);
    match &result {
        Ok(_) => {}
        // Diagnostics carry their own `error[rule]:` prefix.
        Err(e @ homelab::Error::Invalid { .. }) => eprintln!("{e}"),
        Err(e) => eprintln!("error: {e}"),
    }
    ExitCode::from(homelab::exit_code(&result))
}
