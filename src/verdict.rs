//! How a run ends other than with a livepatch: a verdict (refused, no functional change),
//! the verdict a diff report implies, and the per-function text of a report that `klpgen diff`
//! prints and `klpgen build` prints for each unit (split parts under their function).

use elfdiff::Report;

/// A run that ends with a verdict rather than an error.
#[derive(Debug)]
pub enum Verdict {
    /// Unsupported change(s); the message lists them.
    Refused(String),
    NoChange,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Refused(m) => write!(f, "refused: {m}"),
            Verdict::NoChange => f.write_str("no functional change"),
        }
    }
}

impl std::error::Error for Verdict {}

impl Verdict {
    /// The verdict klpgen stops with for a report, if any: its refusals, else no change when
    /// nothing changed and nothing is new.
    pub fn of(report: &Report) -> Option<Verdict> {
        if !report.refused.is_empty() {
            let lines: Vec<String> = report
                .refused
                .iter()
                .map(|r| {
                    format!(
                        "\n  [{}] {} in {}: {}\n    hint: {}",
                        r.key, r.symbol, r.section, r.reason, r.hint
                    )
                })
                .collect();
            return Some(Verdict::Refused(format!(
                "{} unsupported change(s):{}",
                report.refused.len(),
                lines.concat()
            )));
        }
        if report.changed.is_empty() && report.new.is_empty() {
            return Some(Verdict::NoChange);
        }
        None
    }
}

/// A report as text: `label:`, then one line per changed, new, refused and ignored function
/// and per callback and system state; the split parts (`.cold`, `.part.N`) of a changed or new
/// function on lines of their own under it.
pub fn print_text(label: &str, r: &Report) {
    println!("{label}:");
    let parts = |f: &str| {
        for p in r.parts.get(f).into_iter().flatten() {
            println!("    part   {} ({})", p.name, p.verdict.as_str());
        }
    };
    for f in &r.changed {
        println!("  changed  {f}");
        parts(f);
    }
    for f in &r.new {
        println!("  new      {f}");
        parts(f);
    }
    for f in &r.refused {
        println!("  refused  {} ({})", f.symbol, f.key);
    }
    for i in &r.ignored {
        println!("  ignored  {} in {}: {}", i.symbol, i.section, i.reason);
    }
    for c in &r.callbacks {
        println!("  callback {} {}", c.kind.member(), c.function);
    }
    for st in &r.states {
        println!("  state    {:#x} version {}", st.id, st.version);
    }
}
