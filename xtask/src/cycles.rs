//! `cargo xtask cycles`: import cycles between modules of one crate.
//!
//! Every `.rs` file under a crate's `src/` is a module (`lib.rs`/`main.rs` the root,
//! `a/mod.rs` and `a.rs` the module `a`). Each `use` tree and each path in the code that starts
//! with `crate`, `super` or `self` is resolved to the deepest module it names, giving an edge
//! from the module of the file to that module. Edges between a module and its own ancestors or
//! descendants are left out: a parent declares and re-exports its children, and children use
//! what their parent defines, which is how Rust modules nest, not a cycle. What remains must be
//! acyclic (test modules, `#[cfg(test)]`, are left out); each strongly connected component of two or more modules is reported with the
//! files and paths that make its edges.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use syn::visit::Visit;

/// The crates checked (their `src/` directories, relative to the workspace root).
pub const CRATES: &[&str] = &[
    "agent",
    "agent-ebpf",
    "export",
    "model",
    "proto",
    "protocol",
    "tests",
    "tests/vm-peer",
    "xtask",
];

type Module = Vec<String>;

/// Where an edge comes from: the file and the path written there.
#[derive(Clone, Debug)]
struct Witness {
    file: PathBuf,
    path: String,
}

/// Checks every crate of [`CRATES`]; an error lists the cycles.
pub fn check(root: &Path) -> Result<()> {
    let mut report = String::new();
    for krate in CRATES {
        for cycle in crate_cycles(&root.join(krate).join("src"))? {
            report.push_str(&format!("{krate}: {cycle}\n"));
        }
    }
    if report.is_empty() {
        eprintln!("xtask: no import cycle between the modules of {CRATES:?}");
        Ok(())
    } else {
        bail!(
            "import cycles between modules (move the shared items to one side, or to a \
             module both use):\n{report}"
        )
    }
}

/// The cycles of one crate, each as a line naming its modules and its edges.
fn crate_cycles(src: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeMap<Module, Witness>> = BTreeMap::new();
    for (module, file) in &modules {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut paths = Paths::default();
        paths.visit_file(&ast);
        for p in paths.0 {
            // In `a/b.rs` as in `a/b/mod.rs`, `super` is `a` and `self` is `a::b`.
            let Some(target) = resolve(module, &p, &known) else {
                continue;
            };
            if target.starts_with(module) || module.starts_with(&target) {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .entry(target)
                .or_insert_with(|| Witness {
                    file: file.strip_prefix(src).unwrap_or(file).to_path_buf(),
                    path: p.join("::"),
                });
        }
    }
    Ok(components(&known, &edges)
        .into_iter()
        .map(|scc| {
            let names: Vec<String> = scc.iter().map(display).collect();
            let mut line = format!("{{{}}}:", names.join(", "));
            for a in &scc {
                for (b, w) in edges.get(a).into_iter().flatten() {
                    if scc.contains(b) {
                        line.push_str(&format!(
                            " {} -> {} ({}: {});",
                            display(a),
                            display(b),
                            w.file.display(),
                            w.path
                        ));
                    }
                }
            }
            line
        })
        .collect())
}

fn display(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The module path of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_of(src: &Path, f: &Path) -> Module {
    let rel = f.strip_prefix(src).unwrap_or(f);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The deepest known module a path names, from module `here`.
fn resolve(here: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut base: Module;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &path[1..];
        }
        Some("super" | "self") => {
            base = here.clone();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if known.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// Every `use` tree (expanded) and every other path of a file.
#[derive(Default)]
struct Paths(Vec<Vec<String>>);

impl Paths {
    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut v = prefix.clone();
                v.push(n.ident.to_string());
                self.0.push(v);
            }
            syn::UseTree::Rename(r) => {
                let mut v = prefix.clone();
                v.push(r.ident.to_string());
                self.0.push(v);
            }
            syn::UseTree::Glob(_) => self.0.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }
}

/// `#[cfg(test)]`: test code may compare a module with the reference it replaced; that is not
/// a dependency of the module.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Path>()
                .is_ok_and(|p| p.is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.0
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

/// Strongly connected components of two or more modules (Tarjan).
fn components(
    nodes: &BTreeSet<Module>,
    edges: &BTreeMap<Module, BTreeMap<Module, Witness>>,
) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeMap<Module, Witness>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    impl<'a> T<'a> {
        fn strong(&mut self, v: &'a Module) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            if let Some(ws) = self.edges.get(v) {
                for w in ws.keys() {
                    if !self.index.contains_key(w) {
                        self.strong(w);
                        let l = self.low[w].min(self.low[v]);
                        self.low.insert(v, l);
                    } else if self.on.contains(w) {
                        let l = self.index[w].min(self.low[v]);
                        self.low.insert(v, l);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n) {
            t.strong(n);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn finds_a_cycle_through_use_trees_and_paths_and_ignores_nesting() {
        let dir = std::env::temp_dir().join(format!("xtask-cycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            &[
                ("lib.rs", "mod a; mod b; mod c; pub use a::A;"),
                ("a/mod.rs", "mod inner; use super::{b::{B}, c};"),
                (
                    "a/inner.rs",
                    "use super::super::A; fn f() { crate::a::g(); }",
                ),
                (
                    "b.rs",
                    "pub struct B; fn f(_: crate::a::A) {} \
                     #[cfg(test)] mod tests { use crate::c::c; }",
                ),
                (
                    "c.rs",
                    "pub fn c() {} #[cfg(test)] mod tests { use crate::b::B; }",
                ),
            ],
        );
        let cycles = crate_cycles(&dir).unwrap();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].starts_with("{a, b}:"), "{cycles:?}");
        assert!(
            cycles[0].contains("a -> b (a/mod.rs: super::b::B)"),
            "{cycles:?}"
        );
        assert!(
            cycles[0].contains("b -> a (b.rs: crate::a::A)"),
            "{cycles:?}"
        );
        // Break it: b no longer names a.
        write(&dir, &[("b.rs", "pub struct B;")]);
        assert_eq!(crate_cycles(&dir).unwrap(), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
