//! The layers of `hook/src`, as a test: no import cycle between files, and each layer imports
//! only downward. Every `.rs` file of the library is a node; an edge is any path that names a
//! module of the crate: a `use` (`pub use` included, relative ones like `use settings::X` too),
//! and `crate::…`, `super::…`, `self::…` or `child_module::…` paths in code. `mod x;`
//! declarations are not edges (a parent declares its children). Comments and strings are skipped.
//!
//! The layers, bottom up: leaf types (`types/`, `tls.rs`, `retry.rs`) import nothing of the crate
//! but each other; `plan/` (pure) imports only leaves; `config/` only leaves; the engine imports no
//! subcommand; each subcommand imports its own files, the engine and the leaves, never another
//! subcommand; `cli.rs`, the command tree, at the top where nothing imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Files (or folders, ending in '/') that must import nothing of the crate but other leaves.
const LEAVES: &[&str] = &["types/", "tls.rs", "retry.rs"];
/// Each subcommand's own files: it may import them, the engine and the leaves, never another
/// subcommand; the engine imports none of them.
const SUBCOMMANDS: &[&[&str]] = &[
    &["converge.rs", "reconcile.rs", "node.rs"],
    &["verify.rs"],
    &["backup/"],
    &["agent/"],
];

#[test]
fn the_library_has_no_import_cycle() {
    let graph = Graph::of(&library());
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "import cycles in hook/src; each line is a group of files that reach each other:\n{}",
        cycles
            .iter()
            .map(|c| c.join(", "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn each_layer_imports_only_downward() {
    let graph = Graph::of(&library());
    let mut broken = graph.violations("leaf", is_leaf, is_leaf);
    broken.extend(graph.violations(
        "plan",
        |f| f.starts_with("plan/"),
        |to| to.starts_with("plan/") || is_leaf(to),
    ));
    broken.extend(graph.violations(
        "config",
        |f| f.starts_with("config/"),
        |to| to.starts_with("config/") || is_leaf(to),
    ));
    broken.extend(graph.violations("any module", |_| true, |to| to != "cli.rs"));
    let subcommand_of = |file: &str| SUBCOMMANDS.iter().position(|own| in_any(file, own));
    broken.extend(graph.violations(
        "engine",
        |f| f != "cli.rs" && f != "main.rs" && subcommand_of(f).is_none(),
        |to| subcommand_of(to).is_none(),
    ));
    for own in SUBCOMMANDS {
        broken.extend(graph.violations(
            "subcommand",
            |f| in_any(f, own),
            |to| in_any(to, own) || subcommand_of(to).is_none(),
        ));
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

/// The checker reads the real crate: it finds the edges a reader sees, so a pass is not vacuous.
#[test]
fn the_graph_sees_the_crate_as_written() {
    let graph = Graph::of(&library());
    for (from, to) in [
        ("cli.rs", "converge.rs"),
        ("config/spec.rs", "types/mod.rs"),
        ("plan/health.rs", "plan/lag.rs"),
        ("reconcile.rs", "plan/mod.rs"),
        ("agent/poll.rs", "agent/config.rs"),
        ("agent/mod.rs", "agent/poll.rs"),
        ("config/spec_tests.rs", "config/spec.rs"),
    ] {
        assert!(
            graph.edges[from].contains(to),
            "expected an edge {from} → {to}; {from} has {:?}",
            graph.edges[from]
        );
    }
    assert!(graph.edges.len() > 40, "{} files", graph.edges.len());
}

fn is_leaf(file: &str) -> bool {
    in_any(file, LEAVES)
}

/// Whether `file` is one of `places` (files, or folders ending in '/').
fn in_any(file: &str, places: &[&str]) -> bool {
    places.iter().any(|place| match place.strip_suffix('/') {
        Some(dir) => file.starts_with(dir) && file[dir.len()..].starts_with('/'),
        None => file == *place,
    })
}

/// Every `.rs` file under hook/src, by its path relative to it.
fn library() -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    walk(&root, &root, &mut files);
    files
}

// ---- the checker ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    PathSep,
    Punct(char),
}

/// Rust source → identifiers, string literals and punctuation; comments, chars and lifetimes dropped.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let string_at = |i: usize, out: &mut Vec<Token>| -> usize {
        // A plain string starting at the quote `i`; returns the index after it.
        let mut j = i + 1;
        let mut text = String::new();
        while j < chars.len() && chars[j] != '"' {
            if chars[j] == '\\' {
                j += 1;
            }
            if j < chars.len() {
                text.push(chars[j]);
            }
            j += 1;
        }
        out.push(Token::Str(text));
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                if i + 1 >= chars.len() {
                    i = chars.len();
                    break;
                }
                match (chars[i], chars[i + 1]) {
                    ('/', '*') => (depth += 1, i += 2).1,
                    ('*', '/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
        } else if c == '"' {
            i = string_at(i, &mut out);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br")
                && matches!(chars.get(i), Some('"') | Some('#'));
            if raw {
                let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body_start = i + hashes + 1;
                let rest: String = chars[body_start..].iter().collect();
                let end = rest.find(&close).unwrap_or(rest.len());
                out.push(Token::Str(rest[..end].to_string()));
                i = body_start + rest[..end].chars().count() + close.chars().count();
            } else if word == "b" && chars.get(i) == Some(&'"') {
                i = string_at(i, &mut out);
            } else {
                out.push(Token::Ident(word));
            }
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// `use` trees → full paths: `a::{b, c::{d, *}}` gives a::b, a::c::d and a::c.
fn use_paths(tokens: &[Token]) -> Vec<Vec<String>> {
    fn tree(tokens: &[Token], at: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            match tokens.get(*at) {
                Some(Token::Ident(name)) if name == "as" => {
                    *at += 2;
                    break;
                }
                Some(Token::Ident(name)) => {
                    path.push(name.clone());
                    *at += 1;
                }
                Some(Token::PathSep) => *at += 1,
                Some(Token::Punct('{')) => {
                    *at += 1;
                    while !matches!(tokens.get(*at), Some(Token::Punct('}')) | None) {
                        tree(tokens, at, path.clone(), out);
                        if matches!(tokens.get(*at), Some(Token::Punct(','))) {
                            *at += 1;
                        }
                    }
                    *at += 1;
                    return;
                }
                Some(Token::Punct('*')) => {
                    *at += 1;
                    break;
                }
                _ => break,
            }
        }
        if path.last().is_some_and(|s| s == "self") {
            path.pop();
        }
        out.push(path);
    }
    let mut out = Vec::new();
    let mut at = 0;
    tree(tokens, &mut at, Vec::new(), &mut out);
    out
}

struct Graph {
    /// file → the files it imports (self-edges left out).
    edges: BTreeMap<String, BTreeSet<String>>,
}

/// Where `mod name;` declared in `file` (inside inline modules `inline`) lives.
fn child_file(
    files: &BTreeMap<String, String>,
    file: &str,
    inline: &[String],
    name: &str,
    path_attr: Option<&str>,
) -> Option<String> {
    let dir = match file.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => String::new(),
    };
    if let Some(path) = path_attr {
        return Some(format!("{dir}{path}"));
    }
    let stem = file.rsplit('/').next().unwrap().trim_end_matches(".rs");
    let mut base = dir;
    if !matches!(stem, "mod" | "lib" | "main") {
        base.push_str(stem);
        base.push('/');
    }
    for module in inline {
        base.push_str(module);
        base.push('/');
    }
    [format!("{base}{name}.rs"), format!("{base}{name}/mod.rs")]
        .into_iter()
        .find(|candidate| files.contains_key(candidate))
}

/// One walk over a file's tokens, with the module scope (file module plus inline modules) known
/// at each token.
struct Walk<'a> {
    tokens: Vec<Token>,
    module: &'a [String],
}

enum Found {
    /// `mod name;` (with a `#[path]` if any) inside these inline modules.
    Declared {
        inline: Vec<String>,
        name: String,
        path_attr: Option<String>,
    },
    /// A path naming something, seen in this module scope.
    Path {
        scope: Vec<String>,
        path: Vec<String>,
    },
}

impl Walk<'_> {
    fn run(&self) -> Vec<Found> {
        let t = &self.tokens;
        let mut found = Vec::new();
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut path_attr: Option<String> = None;
        let mut i = 0;
        while i < t.len() {
            let scope = |inline: &[(String, usize)]| -> Vec<String> {
                let mut s = self.module.to_vec();
                s.extend(inline.iter().map(|(m, _)| m.clone()));
                s
            };
            match &t[i] {
                Token::Punct('#') => {
                    if let [Token::Punct('['), Token::Ident(attr), Token::Punct('='), Token::Str(p), ..] =
                        &t[i + 1..]
                    {
                        if attr == "path" {
                            path_attr = Some(p.clone());
                        }
                    }
                }
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => {
                    depth -= 1;
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                Token::Ident(word) if word == "mod" => {
                    if let (Some(Token::Ident(name)), Some(after)) = (t.get(i + 1), t.get(i + 2)) {
                        if *after == Token::Punct(';') {
                            found.push(Found::Declared {
                                inline: inline.iter().map(|(m, _)| m.clone()).collect(),
                                name: name.clone(),
                                path_attr: path_attr.take(),
                            });
                        } else if *after == Token::Punct('{') {
                            inline.push((name.clone(), depth));
                            depth += 1;
                            path_attr = None;
                            i += 3;
                            continue;
                        }
                    }
                }
                Token::Ident(word) if word == "use" => {
                    let end = (i..t.len())
                        .find(|j| t[*j] == Token::Punct(';'))
                        .unwrap_or(t.len());
                    let scope = scope(&inline);
                    for path in use_paths(&t[i + 1..end]) {
                        found.push(Found::Path {
                            scope: scope.clone(),
                            path,
                        });
                    }
                    i = end;
                }
                Token::Ident(first)
                    if (i == 0 || t[i - 1] != Token::PathSep)
                        && t.get(i + 1) == Some(&Token::PathSep) =>
                {
                    let mut path = vec![first.clone()];
                    let mut last = i;
                    while let (Some(Token::PathSep), Some(Token::Ident(segment))) =
                        (t.get(last + 1), t.get(last + 2))
                    {
                        path.push(segment.clone());
                        last += 2;
                    }
                    found.push(Found::Path {
                        scope: scope(&inline),
                        path,
                    });
                    i = last;
                }
                _ => {}
            }
            i += 1;
        }
        found
    }
}

impl Graph {
    /// The import graph of a crate given as file → source; the root is `lib.rs`.
    fn of(files: &BTreeMap<String, String>) -> Graph {
        // Pass 1: the module tree (module path → file), from lib.rs down.
        let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut found_in: BTreeMap<String, (Vec<String>, Vec<Found>)> = BTreeMap::new();
        let mut queue = vec![(Vec::<String>::new(), "lib.rs".to_string())];
        while let Some((module, file)) = queue.pop() {
            let source = files
                .get(&file)
                .unwrap_or_else(|| panic!("{file}: declared but not found"));
            modules.insert(module.clone(), file.clone());
            let walk = Walk {
                tokens: tokens(source),
                module: &module,
            };
            let found = walk.run();
            for item in &found {
                if let Found::Declared {
                    inline,
                    name,
                    path_attr,
                } = item
                {
                    let child = child_file(files, &file, inline, name, path_attr.as_deref())
                        .unwrap_or_else(|| panic!("{file}: no file for `mod {name};`"));
                    let mut path = module.clone();
                    path.extend(inline.iter().cloned());
                    path.push(name.clone());
                    queue.push((path, child));
                }
            }
            found_in.insert(file, (module, found));
        }
        // Pass 2: every path that names a module of the crate is an edge to that module's file.
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, (_, found)) in &found_in {
            let targets = edges.entry(file.clone()).or_default();
            for item in found {
                let Found::Path { scope, path } = item else {
                    continue;
                };
                let Some(full) = resolve(&modules, scope, path) else {
                    continue;
                };
                let target = (0..=full.len())
                    .rev()
                    .find_map(|n| modules.get(&full[..n]))
                    .expect("the crate root is a module");
                if target != file {
                    targets.insert(target.clone());
                }
            }
        }
        Graph { edges }
    }

    /// Every cycle, as the files of one strongly connected component (Tarjan's algorithm).
    fn cycles(&self) -> Vec<Vec<String>> {
        struct Tarjan<'a> {
            graph: &'a Graph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            components: Vec<Vec<String>>,
        }
        impl<'a> Tarjan<'a> {
            fn visit(&mut self, node: &'a str) {
                let n = self.index.len();
                self.index.insert(node, n);
                self.low.insert(node, n);
                self.stack.push(node);
                self.on_stack.insert(node);
                let graph = self.graph;
                for next in graph.edges.get(node).into_iter().flatten() {
                    let next = next.as_str();
                    if !self.index.contains_key(next) {
                        self.visit(next);
                        let low = self.low[node].min(self.low[next]);
                        self.low.insert(node, low);
                    } else if self.on_stack.contains(next) {
                        let low = self.low[node].min(self.index[next]);
                        self.low.insert(node, low);
                    }
                }
                if self.low[node] == self.index[node] {
                    let mut component = Vec::new();
                    while let Some(top) = self.stack.pop() {
                        self.on_stack.remove(top);
                        component.push(top.to_string());
                        if top == node {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.components.push(component);
                    }
                }
            }
        }
        let mut tarjan = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            components: Vec::new(),
        };
        for node in self.edges.keys() {
            if !tarjan.index.contains_key(node.as_str()) {
                tarjan.visit(node);
            }
        }
        tarjan.components
    }

    /// Edges from files `rule` covers to files `allowed` refuses, as "rule: from → to".
    fn violations(
        &self,
        rule: &str,
        covers: impl Fn(&str) -> bool,
        allowed: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(from, _)| covers(from))
            .flat_map(|(from, to)| {
                to.iter()
                    .filter(|to| !allowed(to))
                    .map(move |to| format!("{rule}: {from} → {to}"))
            })
            .collect()
    }
}

/// A path seen in module `scope` → the absolute module path it names, or None when it names
/// something outside the crate (std, an external crate, a local item).
fn resolve(
    modules: &BTreeMap<Vec<String>, String>,
    scope: &[String],
    path: &[String],
) -> Option<Vec<String>> {
    let first = path.first()?;
    let (mut base, rest): (Vec<String>, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (scope.to_vec(), &path[1..]),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let base = scope[..scope.len().checked_sub(supers)?].to_vec();
            (base, &path[supers..])
        }
        _ => {
            let mut child = scope.to_vec();
            child.push(first.clone());
            // A child module of the scope (`use settings::X`, `poll::Agent::new`).
            if !modules.contains_key(&child) {
                return None;
            }
            (scope.to_vec(), path)
        }
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

// ---- the checker's own tests: it must be able to fail ----------------------------------------

fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(name, source)| (name.to_string(), source.to_string()))
        .collect()
}

#[test]
fn a_two_file_cycle_is_found() {
    let files = crate_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
        ("b.rs", "pub struct B;\nfn f() -> crate::a::A { todo!() }\n"),
    ]);
    assert_eq!(Graph::of(&files).cycles(), vec![vec!["a.rs", "b.rs"]]);
}

#[test]
fn a_parent_that_re_exports_a_child_that_imports_it_is_a_cycle() {
    let files = crate_of(&[
        ("lib.rs", "mod config;"),
        (
            "config/mod.rs",
            "mod spec;\npub use spec::Spec;\npub fn reject() {}",
        ),
        ("config/spec.rs", "use super::{reject};\npub struct Spec;"),
    ]);
    assert_eq!(
        Graph::of(&files).cycles(),
        vec![vec!["config/mod.rs", "config/spec.rs"]]
    );
}

#[test]
fn a_child_path_in_code_is_an_edge_too() {
    let files = crate_of(&[
        ("lib.rs", "mod agent;"),
        (
            "agent/mod.rs",
            "mod poll;\npub struct Config;\nfn run() { poll::Agent::new(); }",
        ),
        ("agent/poll.rs", "use super::Config;\npub struct Agent;"),
    ]);
    assert_eq!(
        Graph::of(&files).cycles(),
        vec![vec!["agent/mod.rs", "agent/poll.rs"]]
    );
}

#[test]
fn tests_comments_strings_and_path_attributes_make_no_false_edge() {
    let files = crate_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            concat!(
                "// use crate::b;\n/* crate::b::X */\n",
                "pub fn f() -> &'static str { \"crate::b::X\" }\n",
                "fn g(c: char) -> bool { c == '{' }\n",
                "#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
            ),
        ),
        (
            "b.rs",
            "use crate::a;\n#[cfg(test)]\n#[path = \"b_tests.rs\"]\nmod tests;\n",
        ),
        ("b_tests.rs", "use super::*;\nuse crate::a::f;\n"),
    ]);
    let graph = Graph::of(&files);
    assert_eq!(graph.edges["a.rs"], BTreeSet::new());
    assert_eq!(graph.edges["b.rs"], BTreeSet::from(["a.rs".to_string()]));
    assert_eq!(
        graph.edges["b_tests.rs"],
        BTreeSet::from(["a.rs".to_string(), "b.rs".to_string()])
    );
    assert!(graph.cycles().is_empty());
}

#[test]
fn a_leaf_that_imports_upward_breaks_the_rule() {
    let files = crate_of(&[
        ("lib.rs", "mod types;\nmod plan;"),
        ("types/mod.rs", "use crate::plan::Action;"),
        ("plan/mod.rs", "pub enum Action {}"),
    ]);
    let graph = Graph::of(&files);
    assert_eq!(
        graph.violations("leaf", is_leaf, is_leaf),
        vec!["leaf: types/mod.rs → plan/mod.rs"]
    );
}
