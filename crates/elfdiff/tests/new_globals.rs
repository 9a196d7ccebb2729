//! The globals a patch adds (`Diff::new_globals`), which a livepatch of several units defines
//! itself: new functions and data, global, with their exports, and statics the patch makes
//! global; not new statics, not the original's globals, not `__init` code, not the export
//! records. What the plan carries of them
//! (`Plan::new_globals`), and `Diff::plan_carrying` for new data only another unit uses.

use std::path::Path;
use std::process::Command;

use elfdiff::{Diff, Object, Orig, Patched, PlanOptions};
use testsupport::gcc::{run, DIFF_CFLAGS, KERNEL_CFLAGS};

const SOURCE: &str = r#"
extern int printk(const char *fmt, ...);
int existing(int x) { return x + 1; }
#ifdef PATCHED
#define WAS_STATIC
#else
#define WAS_STATIC static
#endif
WAS_STATIC __attribute__((noinline)) int promoted(int x) { return x + 2; }
WAS_STATIC int promoted_data = 5;
int use_them(int x) { promoted_data += x; return promoted(x) + promoted_data; }
#ifdef PATCHED
int new_data;
int new_used_data = 3;
__attribute__((noinline)) int new_fn(int x) { return x * new_used_data; }
static __attribute__((noinline)) int new_static(int x) { return x - 1; }
__attribute__((section(".init.text"), noinline)) int new_init(void) { return 0; }
asm(".pushsection .export_symbol, \"a\"\n"
    "__export_symbol_new_fn:\n"
    "\t.quad new_fn\n"
    "\t.popsection\n");
#endif
void user(int x)
{
#ifdef PATCHED
	printk("%d\n", new_static(x));
#else
	printk("%d\n", x);
#endif
}
"#;

fn compile(dir: &Path, patched: bool) -> Vec<u8> {
    let src = dir.join("t.c");
    std::fs::write(&src, SOURCE).unwrap();
    let out = dir.join(if patched { "p.o" } else { "o.o" });
    let mut cmd = Command::new("gcc");
    cmd.args(KERNEL_CFLAGS).args(DIFF_CFLAGS);
    if patched {
        cmd.arg("-DPATCHED");
    }
    run(cmd.arg(&src).arg("-o").arg(&out));
    std::fs::read(out).unwrap()
}

#[test]
fn new_globals_are_listed_and_carried_on_request() {
    let dir = std::env::temp_dir().join(format!("elfdiff-new-globals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (o, p) = (compile(&dir, false), compile(&dir, true));
    std::fs::remove_dir_all(&dir).unwrap();
    let orig = Object::<Orig>::parse("o.o", &o).unwrap();
    let patched = Object::<Patched>::parse("p.o", &p).unwrap();
    let diff = Diff::new(&orig, &patched);
    let mut got: Vec<(String, bool, bool)> = diff
        .new_globals()
        .into_iter()
        .map(|g| (g.name, g.exported, g.was_static))
        .collect();
    got.sort();
    let g = |n: &str, exported, was_static| (n.to_string(), exported, was_static);
    assert_eq!(
        got,
        [
            g("new_data", false, false),
            g("new_fn", true, false),
            g("new_used_data", false, false),
            g("promoted", false, true),
            g("promoted_data", false, true),
        ]
    );
    let carried = |plan: &elfdiff::Plan| {
        let mut v: Vec<String> = plan
            .new_globals
            .iter()
            .map(|(n, i)| {
                assert_eq!(&plan.symbols[*i].name, n);
                n.clone()
            })
            .collect();
        v.sort();
        v
    };
    let opts = PlanOptions::default();
    // The new function is carried as new code, and the data it uses with it; new_data only
    // on request.
    // (Whether `promoted` is carried without asking depends on whether GCC compiled it
    // differently as a global; carried on request it always is.)
    let plan = diff.plan(&opts).unwrap();
    let got = carried(&plan);
    assert!(
        got.starts_with(&["new_fn".to_string(), "new_used_data".to_string()])
            && !got.contains(&"new_data".to_string()),
        "{got:?}"
    );
    let carry = ["new_data".to_string(), "promoted".to_string()];
    let plan = diff.plan_carrying(&opts, &carry).unwrap();
    assert_eq!(
        carried(&plan),
        ["new_data", "new_fn", "new_used_data", "promoted"]
    );
    // A static variable made global holds the running kernel's state: never a copy.
    let e = diff
        .plan_carrying(&opts, &["promoted_data".to_string()])
        .unwrap_err();
    assert!(
        e.to_string().contains("a copy would not have its state"),
        "{e}"
    );
    // A name that is not a new global of the object is an error, not a silent no-op.
    for bad in ["existing", "new_static", "nowhere"] {
        let e = diff.plan_carrying(&opts, &[bad.to_string()]).unwrap_err();
        assert!(e.to_string().contains("not a global the patch adds"), "{e}");
    }
}
