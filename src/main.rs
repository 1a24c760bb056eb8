use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    sae_wgpu::cli::main()
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader has gone (`sae eval … | head`)
/// would panic in `println!`; a command-line tool ends quietly there instead, as `cat` does.
#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}
