//! The layer check: every top-level module of `server/src` belongs to one
//! layer (`docs/architecture.md`, "Layers"), and a module may name only
//! modules of its own layer or below it (`crate::<module>` outside
//! comments and test modules). Modules of one layer may not name each
//! other in a circle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. The metadata image and its records are the
/// `sluice-metadata` crate, below all of these (it cannot name them).
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["base", "util", "error_codes", "disk"]),
    ("config", &["config"]),
    ("metadata", &["meta", "security"]),
    ("quorum and codec", &["quorum", "protocol"]),
    ("replica", &["partition", "producer_state"]),
    ("shard core", &["shard"]),
    ("services", &["controller", "groups", "replication", "txn"]),
    ("node", &["node"]),
    ("api", &["handlers", "net", "metrics", "ops"]),
    ("process", &["broker", "cli"]),
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS and to docs/architecture.md"))
}

/// The source without `//` comments and without the `#[cfg(test)]`
/// module at its end.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn modules_named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module -> the top-level modules its files name.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = top_module(&src, f);
        if from == "lib" || from == "main" {
            continue;
        }
        let named = modules_named(&code_of(&std::fs::read_to_string(f).unwrap()));
        let entry = out.entry(from.clone()).or_default();
        entry.extend(named.into_iter().filter(|m| *m != from && tops.contains(m)));
    }
    out
}

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            stack.extend(edges.get(&m).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn no_module_names_a_layer_above_its_own() {
    let edges = edges();
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if layer_of(to) > layer_of(from) {
                upward.push(format!(
                    "{from} ({}) -> {to} ({})",
                    LAYERS[layer_of(from)].0,
                    LAYERS[layer_of(to)].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that name a layer above their own: {upward:#?}"
    );
}

#[test]
fn modules_of_one_layer_name_each_other_in_no_circle() {
    let edges = edges();
    for (from, tos) in &edges {
        for to in tos {
            if layer_of(to) == layer_of(from) {
                assert!(
                    !reaches(&edges, to, from),
                    "{from} -> {to} closes a circle back to {from}"
                );
            }
        }
    }
}

#[test]
fn the_check_sees_an_upward_edge_and_ignores_comments_and_tests() {
    let code = code_of(
        "use crate::shard::Shard; // crate::broker\n/// [`crate::net`]\nfn f() {}\n#[cfg(test)]\nmod tests { use crate::cli; }",
    );
    assert_eq!(modules_named(&code), BTreeSet::from(["shard".to_string()]));
}
