//! The arrows between pglb's top-level modules, checked over their `use`
//! lines (`cargo test layering`): no import circle outside `config/`, and
//! `state/` imports nothing but `config/` and `pg/`. docs/architecture.md
//! draws them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its code (not its tests) names.
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut visit = |module: &str, path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let targets = graph.entry(module.to_string()).or_default();
        for line in text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let to: String = line[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !to.is_empty() && to != module {
                    targets.insert(to);
                }
            }
        }
    };
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if matches!(name.as_str(), "lib" | "main" | "fuzz" | "layering") {
            continue;
        }
        if path.is_dir() {
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("schedule_tests.rs") {
                        visit(&name, &p);
                    }
                }
            }
        } else {
            visit(&name, &path);
        }
    }
    graph
}

/// Modules reachable from `from` without passing through `config`.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = graph.get(from).into_iter().flatten().map(String::as_str).collect();
    while let Some(m) = todo.pop() {
        if m == "config" || !seen.insert(m.to_string()) {
            continue;
        }
        todo.extend(graph.get(m).into_iter().flatten().map(String::as_str));
    }
    seen
}

#[test]
fn no_import_circle_outside_config() {
    let graph = arrows();
    for module in graph.keys().filter(|m| *m != "config") {
        let back: Vec<&String> = graph[module].iter().filter(|to| *to != "config" && reachable(&graph, to).contains(module)).collect();
        assert!(back.is_empty(), "import circle: {module} -> {back:?} -> ... -> {module}\n{graph:#?}");
    }
}

#[test]
fn state_imports_only_config_and_pg() {
    let graph = arrows();
    let extra: Vec<&String> = graph["state"].iter().filter(|m| !matches!(m.as_str(), "config" | "pg")).collect();
    assert!(extra.is_empty(), "state imports {extra:?}");
}
