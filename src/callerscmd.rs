//! `klpgen callers`: the consistency analysis for livepatch authors — who calls a function (up
//! to a depth, from the target's `vmlinux.o`), which of those callers livepatch cannot redirect,
//! whose address is taken, and which call the function inside a loop (and so may run old then
//! new code in one call if only the function is patched). Text, JSON or Graphviz output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use elfdiff::callgraph::{CallGraph, CallKind, Edge, FuncId, Reached, Taker};
use elfdiff::model::Orig;
use elfdiff::Object;

use crate::process::{self, Interrupt};

#[derive(Clone, Copy, clap::ValueEnum, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Text,
    Json,
    Dot,
}

#[derive(clap::Args, Debug)]
pub struct CallersArgs {
    /// The target kernel's build directory; its vmlinux.o is analysed (default: the current
    /// directory).
    #[arg(long)]
    pub builddir: Option<PathBuf>,
    /// Analyse this relocatable object instead of BUILDDIR/vmlinux.o (repeat to join several;
    /// globals are matched by name across them).
    #[arg(long = "vmlinux-o")]
    pub vmlinux_o: Vec<PathBuf>,
    /// How many levels of callers to follow.
    #[arg(long, default_value_t = 2)]
    pub depth: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: GraphFormat,
    /// Also render the graph as SVG into FILE (runs Graphviz's `dot`).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print the time spent reading, parsing and building the graph, and its size, to stderr.
    #[arg(long)]
    pub timing: bool,
    /// Functions: NAME, or FILE:NAME to pick a static of one source file (`base.c:get_proc_task`).
    #[arg(required = true)]
    pub functions: Vec<String>,
}

pub fn run(a: CallersArgs) -> Result<()> {
    let paths = if a.vmlinux_o.is_empty() {
        let dir = a.builddir.clone().unwrap_or_else(|| PathBuf::from("."));
        let p = dir.join("vmlinux.o");
        if !p.is_file() {
            bail!(
                "{} not found: give the kernel build directory with --builddir (vmlinux.o is kept by kbuild), or an object with --vmlinux-o",
                p.display()
            );
        }
        vec![p]
    } else {
        a.vmlinux_o.clone()
    };
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    for p in &paths {
        bytes.push(fs::read(p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    let t_read = t0.elapsed();
    let t1 = Instant::now();
    let mut objects = Vec::new();
    for (p, b) in paths.iter().zip(&bytes) {
        objects.push(Object::<Orig>::parse(p.display().to_string(), b)?);
    }
    let t_parse = t1.elapsed();
    let t2 = Instant::now();
    let refs: Vec<&Object<Orig>> = objects.iter().collect();
    let graph = CallGraph::build(&refs);
    let t_graph = t2.elapsed();
    if a.timing {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "callgraph: {} functions, {} edges ({} call sites); read {:.0} ms, parse {:.0} ms, graph {:.0} ms, total {:.0} ms",
            graph.funcs().len(),
            graph.edge_count(),
            graph.site_count(),
            ms(t_read),
            ms(t_parse),
            ms(t_graph),
            ms(t0.elapsed())
        );
    }

    let mut queries = Vec::new();
    let mut unknown = Vec::new();
    for spec in &a.functions {
        let found = graph.find(spec);
        if found.is_empty() {
            unknown.push(spec.as_str());
        }
        queries.push((spec.as_str(), found));
    }
    if !unknown.is_empty() {
        bail!(
            "no function named {} in {}",
            unknown.join(", "),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let results: Vec<Query> = queries
        .iter()
        .map(|(spec, found)| Query {
            spec,
            found: found
                .iter()
                .map(|&f| (f, graph.callers(f, a.depth)))
                .collect(),
        })
        .collect();

    match a.format {
        GraphFormat::Text => print!("{}", render_text(&graph, &results, a.depth)),
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&graph, &results))?
        ),
        GraphFormat::Dot => print!("{}", render_dot(&graph, &results)),
    }
    if let Some(svg) = &a.svg {
        render_svg(&render_dot(&graph, &results), svg)?;
    }
    Ok(())
}

/// One FUNC argument and the functions it names, each with its callers.
struct Query<'a> {
    spec: &'a str,
    found: Vec<(FuncId, Vec<Reached>)>,
}

fn display_name(g: &CallGraph, f: FuncId) -> String {
    let func = g.func(f);
    match func.file {
        Some(file) => format!("{file}:{}", func.name),
        None => func.name.to_string(),
    }
}

fn reasons(g: &CallGraph, f: FuncId) -> Vec<&'static str> {
    g.unpatchable(f).into_iter().map(|u| u.describe()).collect()
}

/// Short names of what takes `f`'s address.
fn takers(g: &CallGraph, f: FuncId) -> Vec<String> {
    let mut out: Vec<String> = g
        .refs_to(f)
        .iter()
        .filter_map(|r| match r.by {
            Taker::Func(t) => Some(display_name(g, t)),
            Taker::Data {
                section, symbol, ..
            } => Some(match symbol {
                Some(s) => format!("{s} ({section})"),
                None => section.to_string(),
            }),
            Taker::Code { .. } => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!(
            "{}, and {} more",
            items[..max].join(", "),
            items.len() - max
        )
    }
}

fn edge_words(e: &Edge, callee: &str) -> Vec<String> {
    let mut w = Vec::new();
    let sites = e.calls + e.tail_calls;
    if e.tail_only() {
        w.push(format!("tail-calls {callee}"));
    } else if sites > 1 {
        w.push(format!("{sites} call sites"));
    }
    if e.loops() {
        w.push(format!("CALLS {callee} IN A LOOP"));
    }
    w
}

fn describe_func(g: &CallGraph, f: FuncId) -> String {
    let func = g.func(f);
    if !func.defined {
        return format!("{} (not defined in the analysed objects)", func.name);
    }
    let scope = match func.file {
        Some(file) => format!("static in {file}"),
        None if func.global => "global".to_string(),
        None => "local".to_string(),
    };
    let aliases = if func.aliases.is_empty() {
        String::new()
    } else {
        format!(", alias {}", func.aliases.join(", "))
    };
    format!(
        "{} ({scope}{aliases}; {}+{:#x}, {} bytes)",
        func.name, func.section, func.offset, func.size
    )
}

fn render_text(g: &CallGraph, queries: &[Query], depth: u32) -> String {
    let mut out = String::new();
    for q in queries {
        if q.found.len() > 1 {
            let _ = writeln!(
                out,
                "{}: {} functions of this name (pick one with FILE:NAME):",
                q.spec,
                q.found.len()
            );
        }
        for (f, reached) in &q.found {
            let _ = writeln!(out, "{}", describe_func(g, *f));
            let why = reasons(g, *f);
            if why.is_empty() {
                let _ = writeln!(out, "  patchable: yes (ftrace entry)");
            } else {
                let _ = writeln!(out, "  patchable: NO: {}", why.join(", "));
            }
            if g.func(*f).exported {
                let _ = writeln!(out, "  exported: modules may call it too (not shown)");
            }
            let taken = takers(g, *f);
            if taken.is_empty() {
                let _ = writeln!(out, "  address taken: no");
            } else {
                let _ = writeln!(
                    out,
                    "  address taken by: {} (indirect callers are not shown)",
                    list(&taken, 6)
                );
            }
            let outside = g
                .refs_to(*f)
                .iter()
                .filter_map(|r| match r.by {
                    Taker::Code {
                        section,
                        offset,
                        label,
                    } => Some(match label {
                        Some(l) => format!("{l} ({section}+{offset:#x})"),
                        None => format!("{section}+{offset:#x}"),
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if !outside.is_empty() {
                let _ = writeln!(
                    out,
                    "  referenced from code outside any function: {}",
                    list(&outside, 4)
                );
            }
            let callees: Vec<String> = g
                .callees(*f)
                .iter()
                .map(|e| {
                    let mut s = display_name(g, e.callee);
                    if e.tail_only() {
                        s.push_str(" (tail)");
                    }
                    if e.loops() {
                        s.push_str(" (in a loop)");
                    }
                    s
                })
                .collect();
            let _ = writeln!(
                out,
                "  callees: {}",
                if callees.is_empty() {
                    "none".to_string()
                } else {
                    list(&callees, 12)
                }
            );
            let direct = reached.iter().filter(|r| r.depth == 1).count();
            let _ = writeln!(
                out,
                "  callers up to depth {depth}: {direct} direct, {} in all",
                reached.len()
            );
            // The breadth-first tree, each caller under the function it calls.
            let mut children: BTreeMap<FuncId, Vec<&Reached>> = BTreeMap::new();
            for r in reached {
                children.entry(r.via).or_default().push(r);
            }
            let mut stack: Vec<&Reached> = children
                .get(f)
                .map_or_else(Vec::new, |c| c.iter().rev().copied().collect());
            while let Some(r) = stack.pop() {
                let callee = g.func(r.via).name;
                let mut words = edge_words(&r.edge, callee);
                let why = reasons(g, r.func);
                if !why.is_empty() {
                    words.push(format!("NOT PATCHABLE: {}", why.join(", ")));
                }
                let taken = takers(g, r.func);
                if !taken.is_empty() {
                    words.push(format!("address taken by {}", list(&taken, 3)));
                }
                if g.func(r.func).exported {
                    words.push("exported".to_string());
                }
                let indent = "  ".repeat(r.depth as usize + 1);
                let tail = if words.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", words.join("; "))
                };
                let _ = writeln!(out, "{indent}{}{tail}", display_name(g, r.func));
                if let Some(c) = children.get(&r.func) {
                    stack.extend(c.iter().rev().copied());
                }
            }
            let loops: Vec<String> = reached
                .iter()
                .filter(|r| r.depth == 1 && r.edge.loops())
                .map(|r| display_name(g, r.func))
                .collect();
            if !loops.is_empty() {
                let name = g.func(*f).name;
                let _ = writeln!(
                    out,
                    "  note: {} {name} inside a loop: a task there can run the old and then the new {name} in one call of {}; consider patching {} too",
                    if loops.len() == 1 {
                        format!("{} calls", loops[0])
                    } else {
                        format!("{} call", list(&loops, 6))
                    },
                    if loops.len() == 1 { "it" } else { "them" },
                    if loops.len() == 1 { "it" } else { "them" }
                );
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonFunc<'a> {
    query: &'a str,
    name: &'a str,
    file: Option<&'a str>,
    global: bool,
    defined: bool,
    section: &'a str,
    offset: u64,
    size: u64,
    patchable: bool,
    reasons: Vec<elfdiff::callgraph::Unpatchable>,
    exported: bool,
    address_taken: Vec<JsonTaker<'a>>,
    callees: Vec<JsonCallee<'a>>,
    callers: Vec<JsonCaller<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
enum JsonTaker<'a> {
    Function {
        name: &'a str,
        file: Option<&'a str>,
    },
    Data {
        section: &'a str,
        symbol: Option<&'a str>,
        offset: u64,
    },
    /// Code outside any function symbol (may be a call; its caller is unknown).
    Code {
        section: &'a str,
        offset: u64,
        label: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct JsonCallee<'a> {
    name: &'a str,
    file: Option<&'a str>,
    kind: CallKind,
    sites: u32,
    loops: bool,
}

#[derive(Serialize)]
struct JsonCaller<'a> {
    name: &'a str,
    file: Option<&'a str>,
    depth: u32,
    via: &'a str,
    via_file: Option<&'a str>,
    kind: CallKind,
    sites: u32,
    /// `via` is called inside a loop of this caller.
    loops: bool,
    patchable: bool,
    reasons: Vec<elfdiff::callgraph::Unpatchable>,
    address_taken: bool,
    exported: bool,
    /// This caller, the function it calls, ... down to the queried function.
    path: Vec<&'a str>,
}

fn kind_of(e: &Edge) -> CallKind {
    if e.tail_only() {
        CallKind::TailCall
    } else {
        CallKind::Call
    }
}

fn to_json<'a>(g: &'a CallGraph<'a>, queries: &'a [Query<'a>]) -> Vec<JsonFunc<'a>> {
    let mut out = Vec::new();
    for q in queries {
        for (f, reached) in &q.found {
            let func = g.func(*f);
            let address_taken = g
                .refs_to(*f)
                .iter()
                .map(|r| match r.by {
                    Taker::Func(t) => JsonTaker::Function {
                        name: g.func(t).name,
                        file: g.func(t).file,
                    },
                    Taker::Data {
                        section,
                        symbol,
                        offset,
                    } => JsonTaker::Data {
                        section,
                        symbol,
                        offset,
                    },
                    Taker::Code {
                        section,
                        offset,
                        label,
                    } => JsonTaker::Code {
                        section,
                        offset,
                        label,
                    },
                })
                .collect();
            let callees = g
                .callees(*f)
                .iter()
                .map(|e| JsonCallee {
                    name: g.func(e.callee).name,
                    file: g.func(e.callee).file,
                    kind: kind_of(e),
                    sites: e.calls + e.tail_calls,
                    loops: e.loops(),
                })
                .collect();
            let callers = reached
                .iter()
                .map(|r| JsonCaller {
                    name: g.func(r.func).name,
                    file: g.func(r.func).file,
                    depth: r.depth,
                    via: g.func(r.via).name,
                    via_file: g.func(r.via).file,
                    kind: kind_of(&r.edge),
                    sites: r.edge.calls + r.edge.tail_calls,
                    loops: r.edge.loops(),
                    patchable: g.patchable(r.func),
                    reasons: g.unpatchable(r.func),
                    address_taken: g.address_taken(r.func),
                    exported: g.func(r.func).exported,
                    path: r.path.iter().map(|&p| g.func(p).name).collect(),
                })
                .collect();
            out.push(JsonFunc {
                query: q.spec,
                name: func.name,
                file: func.file,
                global: func.global,
                defined: func.defined,
                section: func.section,
                offset: func.offset,
                size: func.size,
                patchable: g.patchable(*f),
                reasons: g.unpatchable(*f),
                exported: func.exported,
                address_taken,
                callees,
                callers,
            });
        }
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz: callers above the functions they call; queried functions filled blue,
/// unpatchable ones grey, address-taken ones with a double border; loop edges red and
/// labelled, tail calls dashed.
fn render_dot(g: &CallGraph, queries: &[Query]) -> String {
    let mut nodes: BTreeMap<FuncId, bool> = BTreeMap::new();
    let mut edges: BTreeMap<(FuncId, FuncId), Edge> = BTreeMap::new();
    for q in queries {
        for (f, reached) in &q.found {
            nodes.insert(*f, true);
            for r in reached {
                nodes.entry(r.func).or_insert(false);
                edges.insert((r.func, r.via), r.edge);
            }
        }
    }
    // Edges between shown functions that the breadth-first tree did not use.
    let shown: Vec<FuncId> = nodes.keys().copied().collect();
    for &f in &shown {
        for e in g.direct_callers(f) {
            if nodes.contains_key(&e.caller) {
                edges.entry((e.caller, f)).or_insert(e);
            }
        }
    }
    let mut out = String::from(
        "digraph callers {\n  node [shape=box, fontname=\"monospace\"];\n  edge [fontname=\"monospace\", fontsize=10];\n",
    );
    for (&f, &queried) in &nodes {
        let func = g.func(f);
        let mut lines = vec![dot_escape(func.name)];
        if let Some(file) = func.file {
            lines.push(dot_escape(file));
        }
        let why = reasons(g, f);
        if !why.is_empty() {
            lines.push(format!("not patchable: {}", why.join(", ")));
        }
        let taken = g.address_taken(f);
        if taken {
            lines.push("address taken".to_string());
        }
        let mut attrs = vec![format!("label=\"{}\"", lines.join("\\n"))];
        if queried {
            attrs.push("style=filled, fillcolor=lightblue".into());
        } else if !why.is_empty() {
            attrs.push("style=filled, fillcolor=lightgrey".into());
        }
        if taken {
            attrs.push("peripheries=2".into());
        }
        let _ = writeln!(out, "  n{} [{}];", f.0, attrs.join(", "));
    }
    for ((caller, callee), e) in &edges {
        let mut attrs = Vec::new();
        if e.loops() {
            attrs.push("color=red, fontcolor=red, label=\"loop\"".to_string());
        }
        if e.tail_only() {
            attrs.push("style=dashed".to_string());
        }
        let _ = writeln!(
            out,
            "  n{} -> n{}{};",
            caller.0,
            callee.0,
            if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            }
        );
    }
    out.push_str("}\n");
    out
}

fn render_svg(dot: &str, svg: &Path) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let input = tmp.path().join("callers.dot");
    fs::write(&input, dot).with_context(|| format!("writing {}", input.display()))?;
    let intr = Interrupt::install()?;
    let out = process::run(
        "dot",
        [
            "-Tsvg".as_ref(),
            "-o".as_ref(),
            svg.as_os_str(),
            input.as_os_str(),
        ],
        None,
        &[],
        None,
        &intr,
    )
    .context("rendering SVG needs Graphviz's dot (Debian package graphviz)")?;
    if !out.success {
        bail!("dot failed: {}", out.stderr.trim());
    }
    Ok(())
}
