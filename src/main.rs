#![forbid(unsafe_code)]
use clap::Parser;
use trustform::cli;

fn main() -> std::process::ExitCode {
    let color = cli::color(std::io::IsTerminal::is_terminal(&std::io::stderr()), |k| {
        std::env::var_os(k)
    });
    miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .width(100)
                .color(color)
                .build(),
        )
    }))
    .ok();
    // Usage errors exit 1: exit 2 means "changes present" (--detailed-exitcode).
    let parsed = match cli::Cli::try_parse_from(cli::normalize_args(std::env::args())) {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            e.print().ok();
            return std::process::ExitCode::from(code);
        }
    };
    match cli::run(parsed) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(report) => {
            // Whatever an error quotes from a file goes out redacted.
            let shown = miette::Report::new(trustform::redact::Shown::new(report));
            eprintln!("{shown:?}");
            std::process::ExitCode::from(1)
        }
    }
}
