//! Fuzz target: the call graph of an object (`elfdiff::callgraph`, what `klpgen callers` and
//! the build's consistency analysis read from the target's `vmlinux.o`): functions, calls
//! found by relocation and by decoding, loops, address-taken references, and the queries made
//! of it. The object is also joined with itself, as several objects are joined by name.
#![no_main]

use elfdiff::callgraph::{CallGraph, FuncId};
use elfdiff::model::Orig;
use elfdiff::Object;
use libfuzzer_sys::fuzz_target;

fn queries(g: &CallGraph<'_>) {
    let n = g.funcs().len();
    let _ = (g.edge_count(), g.site_count());
    for i in 0..n.min(64) {
        let f = FuncId(i as u32);
        let func = g.func(f);
        let _ = g.callers(f, 3);
        let c = g.consistency(f);
        for e in &c.callers {
            assert!(e.caller.get() < n, "caller out of range");
            let _ = g.loops_over(e.caller, f);
        }
        let _ = (g.unpatchable(f), g.address_taken(f), g.refs_to(f).len());
        for s in g.sites_from(f).take(16) {
            assert!(s.callee.get() < n, "callee out of range");
        }
        let _ = g.callees(f);
        let found = g.lookup(func.name, func.file);
        assert!(
            func.file.is_some() || found.contains(&f) || !func.global,
            "{} not found by its own name",
            func.name
        );
        let _ = g.find(&format!("{}:{}", func.file.unwrap_or(""), func.name));
    }
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let Ok(obj) = Object::<Orig>::parse("vmlinux.o", &data) else {
        return;
    };
    queries(&CallGraph::build(&[&obj]));
    queries(&CallGraph::build(&[&obj, &obj]));
});
