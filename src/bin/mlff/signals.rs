//! SIGINT and SIGTERM. By default the temporary files of unfinished outputs are
//! removed and the process ends as the signal would have ended it. A run that
//! asks for it (`md`) is told to stop at its next report instead; a second signal
//! then ends the process at once, outputs cut at the last complete report.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// Temporary files to remove when a signal ends the process.
    temps: Vec<PathBuf>,
    /// Whether a run stops at its next report on the first signal.
    graceful: bool,
}

static STATE: Mutex<State> = Mutex::new(State { temps: Vec::new(), graceful: false });

/// The signal that asked a graceful run to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

fn state() -> MutexGuard<'static, State> {
    // A thread that panicked while holding the lock left a valid list behind.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the thread that handles SIGINT and SIGTERM.
pub fn install() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("mlff-signals".into()).spawn(move || {
        for signal in signals.forever() {
            handle(signal);
        }
    })?;
    Ok(())
}

fn handle(signal: i32) {
    let state = state();
    if state.graceful && STOP.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
        eprintln!("\nmlff: stopping at the next report (a second Ctrl-C or SIGTERM stops at once)");
        return;
    }
    for temp in &state.temps {
        let _ = std::fs::remove_file(temp);
    }
    // The lock is kept: no output can be committed or written after this point.
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal);
}

/// Removes `path` if a signal ends the process before [`forget_temp`].
pub fn register_temp(path: &Path) {
    state().temps.push(path.to_path_buf());
}

pub fn forget_temp(path: &Path) {
    state().temps.retain(|p| p != path);
}

/// Runs `work` (a commit, a report's write) so that no signal ends the process
/// halfway through it: the handler waits for the end of `work`.
pub fn uninterrupted<T>(work: impl FnOnce() -> T) -> T {
    let _guard = state();
    work()
}

/// From now on the first signal only asks the run to stop (see [`stop_requested`]).
pub fn stop_gracefully() {
    state().graceful = true;
}

/// The signal that asked the run to stop, if one did.
pub fn stop_requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The shell's name of a signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
