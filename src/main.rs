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
    // SIGPIPE stays ignored (Rust's default): a pipe to a child that went away (an `ssh` whose
    // link was cut, a node script that exited before reading its input) is an error of that
    // one command, never a signal that ends the whole run. Children start with the default.
    // A closed stdout (`homelab show ... | head`) ends quietly below, as CLIs do.
    init_tracing();
    homelab::apply::this_is_the_program();
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
        Err(e) if e.is_closed_stdout() => return ExitCode::SUCCESS,
        // Diagnostics carry their own `error[rule]:` prefix.
        Err(e @ homelab::Error::Invalid { .. }) => eprintln!("{e}"),
        Err(e) => eprintln!("error: {e}"),
    }
    ExitCode::from(homelab::exit_code(&result))
}
