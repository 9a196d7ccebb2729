//! What a run shows while it works. On a terminal: one status line per stage, redrawn in place
//! with the elapsed time and, while kbuild compiles, how many of the expected objects are done.
//! Elsewhere (CI logs, pipes): one plain line per stage. `-q` shows nothing; `--verbose` also
//! echoes every line the child programs print.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    /// One line per stage.
    Lines,
    /// Redrawn status line (stderr is a terminal).
    Terminal,
}

struct State {
    mode: Mode,
    verbose: bool,
    start: Instant,
    stage: String,
    /// Objects the running make is expected to compile, and those seen compiled.
    expected: HashSet<String>,
    done: HashSet<String>,
    last_draw: Option<Instant>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Start showing progress on stderr.
pub fn init(quiet: bool, verbose: bool) {
    let mode = if quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Lines
    };
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(State {
        mode,
        verbose,
        start: Instant::now(),
        stage: String::new(),
        expected: HashSet::new(),
        done: HashSet::new(),
        last_draw: None,
    });
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    g.as_mut().map(f)
}

impl State {
    fn status(&self) -> String {
        let mut s = format!(
            "klpgen: [{:>6.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            self.stage
        );
        if !self.expected.is_empty() {
            s.push_str(&format!(
                " ({}/{} compiled)",
                self.done.len(),
                self.expected.len()
            ));
        }
        s
    }

    fn draw(&mut self) {
        if self.mode == Mode::Terminal {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{}", self.status());
            let _ = e.flush();
            self.last_draw = Some(Instant::now());
        }
    }

    /// End the status line so ordinary output starts on a fresh line.
    fn settle(&mut self) {
        if self.mode == Mode::Terminal && self.last_draw.is_some() {
            eprintln!();
            self.last_draw = None;
        }
    }
}

/// A new stage begins.
pub fn stage(name: &str) {
    with(|s| {
        s.settle();
        s.stage = name.to_string();
        s.expected.clear();
        s.done.clear();
        match s.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{}", s.status()),
            Mode::Terminal => s.draw(),
        }
    });
}

/// The objects the next make is to compile (paths relative to the build directory).
pub fn expect_objects(objects: &[String]) {
    with(|s| {
        s.expected = objects.iter().cloned().collect();
        s.done.clear();
        s.draw();
    });
}

/// End the status line before something is printed on stdout (which shares the terminal).
pub fn pause() {
    with(|s| s.settle());
}

/// Print a message of the run (a warning, a result line) without breaking the status line.
pub fn message(text: &str) {
    let shown = with(|s| {
        s.settle();
        if s.mode != Mode::Quiet {
            eprintln!("{text}");
        }
    });
    if shown.is_none() {
        eprintln!("{text}");
    }
}

/// A message only `--verbose` shows (why a fast path was not taken).
pub fn verbose(text: &str) {
    with(|s| {
        if s.verbose && s.mode != Mode::Quiet {
            s.settle();
            eprintln!("{text}");
        }
    });
}

/// One line a child program printed. kbuild's `  CC      dir/file.o` (or `CC [M]`) lines
/// count the expected objects done.
pub fn child_line(line: &str) {
    with(|s| {
        if s.verbose && s.mode != Mode::Quiet {
            s.settle();
            eprintln!("  | {line}");
        }
        if let Some(obj) = compiled_object(line) {
            if s.expected.contains(obj) && s.done.insert(obj.to_string()) {
                s.draw();
                return;
            }
        }
        // Keep the clock moving on a terminal.
        if s.last_draw.is_some_and(|t| t.elapsed().as_millis() >= 500) {
            s.draw();
        }
    });
}

/// The object a kbuild quiet-mode line reports as compiled (`CC`, `CC [M]`, `AS`, `RUSTC`...).
pub fn compiled_object(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let tool = words.next()?;
    if !matches!(tool, "CC" | "AS" | "RUSTC") {
        return None;
    }
    let mut next = words.next()?;
    if next == "[M]" {
        next = words.next()?;
    }
    next.ends_with(".o").then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbuild_lines_name_their_object() {
        assert_eq!(
            compiled_object("  CC      fs/proc/meminfo.o"),
            Some("fs/proc/meminfo.o")
        );
        assert_eq!(
            compiled_object("  CC [M]  fs/binfmt_misc.o"),
            Some("fs/binfmt_misc.o")
        );
        assert_eq!(compiled_object("  LD [M]  fs/binfmt_misc.ko"), None);
        assert_eq!(compiled_object("  CC      fs/x.mod.c"), None);
        assert_eq!(compiled_object("make[1]: Entering directory"), None);
    }
}
