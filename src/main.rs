//! The `rattle` binary: builds the runtime, parses arguments, and maps the one top-level result
//! to an exit code, in one place.

use clap::{CommandFactory, FromArgMatches};
use rattle::outcome::Outcome;

fn main() {
    // `--color` applies to clap's own help and usage errors too, so it is read first.
    let color = rattle::cli::style::ColorChoice::from_args(std::env::args_os());
    let matches = rattle::cli::Cli::command()
        .color(color.to_clap())
        .get_matches();
    let cli = match rattle::cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Diagnostics go to stderr from here on; a failure to install them is not worth refusing
    // the command over (it can only happen if something installed a subscriber first).
    if let Err(e) = cli.init_logging() {
        rattle::errln!("warning: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rattle::errln!("error: cannot start the async runtime: {e}");
            std::process::exit(Outcome::BadInput.exit_code());
        }
    };
    let code = match runtime.block_on(rattle::cli::dispatch(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            // Each cause once: some causes repeat their source's text in their own message.
            rattle::errln!("error: {}", rattle::probe::error_chain(e.as_ref()));
            Outcome::BadInput.exit_code()
        }
    };
    // Do not wait for lingering blocking tasks (e.g. a stdin read) once the command is done.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}
