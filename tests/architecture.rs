//! Keeps the server's module graph a tree of layers: no two top-level modules of `src/` use each other, directly or around a circle.
//!
//! A circle is how a concept ends up in two places (issue 14 found alerts → webhooks →
//! auth/tokens → config → alerts). This reads the source, not the compiled crate, so it also
//! sees a circle that only a `use` inside a function makes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules of `src/` and, for each, the others its non-test code names as
/// `crate::name` or inside `use crate::{...}`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let module_of = |path: &Path| -> String {
        let first = path
            .strip_prefix(&src)
            .expect("under src/")
            .components()
            .next();
        let name = first.expect("a file name").as_os_str().to_string_lossy();
        name.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| module_of(p))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let from = module_of(path);
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a readable source file");
        // Tests may reach anywhere; only the shipped code must be layered.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut named = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    named.insert(
                        item.trim()
                            .split("::")
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                named.insert(name);
            }
        }
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(
            named
                .into_iter()
                .filter(|m| modules.contains(m) && *m != from),
        );
    }
    graph
}

/// A circle through `start`, if its edges lead back to it.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("never empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_string());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_top_level_module_of_the_server_reaches_itself_through_others() {
    let graph = module_graph();
    // The reader itself must see the edges it is meant to police.
    assert!(graph["app"].contains("config"), "graph: {graph:#?}");
    assert!(graph["live"].contains("alerts"), "graph: {graph:#?}");
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_through(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn configuration_is_a_leaf_that_every_other_module_may_read() {
    let graph = module_graph();
    assert_eq!(
        graph.get("config").cloned().unwrap_or_default(),
        BTreeSet::new()
    );
}
