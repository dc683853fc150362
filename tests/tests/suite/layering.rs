//! The source files of `crates/model/src` and `crates/runner/src` import each other without a
//! cycle: every `crate::…` / `super::…` path in a file (in `use` lines and inline) is resolved to
//! the deepest module file it names, and the resulting file graph must be acyclic (a re-export
//! in a `mod.rs` counts as that `mod.rs` importing the child; the crate root is the facade and
//! not counted). Declaring a child (`mod x;`) is not an import, nor is a file's own
//! `#[cfg(test)] mod tests`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file (`["load", "gguf"]` for `load/gguf/mod.rs`, `[]` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The file of the deepest existing module along `path` (`None` outside the crate's files).
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    let mut best = None;
    for n in 0..=path.len() {
        let dir = path[..n].iter().fold(src.to_path_buf(), |d, p| d.join(p));
        let candidates = if n == 0 {
            vec![src.join("lib.rs"), src.join("main.rs")]
        } else {
            vec![dir.with_extension("rs"), dir.join("mod.rs")]
        };
        match candidates.into_iter().find(|c| c.exists()) {
            Some(f) => best = Some(f),
            None if n > 0 => break,
            None => {}
        }
    }
    best
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parse a use tree at the start of `s` (`a::b`, `a::{b, c::{d}}`, `a::*`, `a as x`): every
/// path it names, each prefixed with `prefix`.
fn use_tree(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut segs = prefix;
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        while i < b.len() && (b[i] as char).is_whitespace() {
            i += 1;
        }
        let n = s[i..].find(|c: char| !is_ident(c)).unwrap_or(s.len() - i);
        if n > 0 {
            segs.push(s[i..i + n].to_string());
            i += n;
        }
        if s[i..].starts_with("::") {
            i += 2;
            if s[i..].starts_with('{') {
                i += 1;
                loop {
                    i += use_tree(&s[i..], segs.clone(), out);
                    while i < b.len() && (b[i] as char).is_whitespace() {
                        i += 1;
                    }
                    match b.get(i) {
                        Some(b',') => i += 1,
                        Some(b'}') => return i + 1,
                        _ => return i,
                    }
                    while i < b.len() && (b[i] as char).is_whitespace() {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'}') {
                        return i + 1;
                    }
                }
            }
            continue;
        }
        out.push(segs);
        return i;
    }
}

/// Every `crate::…` / `super::…` path in `text` (comments skipped), as (root, segments).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = vec![];
    for root in ["crate", "super"] {
        let needle = format!("{root}::");
        let mut from = 0;
        while let Some(i) = code[from..].find(&needle) {
            let start = from + i;
            from = start + needle.len();
            if start > 0 && is_ident(code[..start].chars().last().unwrap()) {
                continue; // part of a longer identifier
            }
            if start >= 2 && &code[start - 2..start] == "::" {
                continue; // `super::super::x` is handled from its first `super`
            }
            let mut found = vec![];
            use_tree(&code[start..], vec![], &mut found);
            for mut segs in found {
                segs.remove(0); // the root itself
                out.push((root.to_string(), segs));
            }
        }
    }
    out
}

/// Text outside `#[cfg(test)]` modules (a file's tests may use anything).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

fn graph(crate_src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = vec![];
    rs_files(crate_src, &mut files);
    assert!(files.len() > 3, "{}: no sources", crate_src.display());
    let mut g = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let module = module_of(crate_src, f);
        let is_mod_file = matches!(f.file_name().unwrap().to_str(), Some("mod.rs" | "lib.rs" | "main.rs"));
        let mut deps = BTreeSet::new();
        for (root, segs) in paths(without_tests(&text)) {
            let mut p = if root == "crate" {
                vec![]
            } else {
                // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` it is `a` as well
                let mut m = module.clone();
                if !is_mod_file || !m.is_empty() {
                    m.pop();
                }
                m
            };
            let mut segs = segs.as_slice();
            while let Some(rest) = segs.strip_prefix(&["super".to_string()][..]) {
                p.pop();
                segs = rest;
            }
            p.extend(segs.iter().cloned());
            if let Some(target) = file_of(crate_src, &p) {
                // the crate root is the facade (`pub use` of the public types), not a layer
                let root_file = target.parent() == Some(crate_src)
                    && matches!(target.file_name().unwrap().to_str(), Some("lib.rs" | "main.rs"));
                if &target != f && !root_file {
                    deps.insert(target);
                }
            }
        }
        g.insert(f.clone(), deps);
    }
    g
}

fn find_cycle(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    // iterative DFS with colours; a grey node reached again closes a cycle
    let mut colour: BTreeMap<&PathBuf, u8> = g.keys().map(|k| (k, 0)).collect();
    for start in g.keys() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(&PathBuf, Vec<&PathBuf>)> = vec![(start, g[start].iter().collect())];
        colour.insert(start, 1);
        while let Some((node, todo)) = stack.last_mut() {
            match todo.pop() {
                Some(next) => match colour.get(next).copied().unwrap_or(2) {
                    0 => {
                        colour.insert(next, 1);
                        stack.push((next, g[next].iter().collect()));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap();
                        return Some(stack[from..].iter().map(|(n, _)| (*n).clone()).chain([next.clone()]).collect());
                    }
                    _ => {}
                },
                None => {
                    colour.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_between_source_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["crates/model/src", "crates/runner/src"] {
        let src = root.join(krate).canonicalize().unwrap();
        let g = graph(&src);
        let edges: usize = g.values().map(BTreeSet::len).sum();
        assert!(edges > 10, "{krate}: only {edges} imports found: the parser is broken");
        if let Some(c) = find_cycle(&g) {
            let names: Vec<String> = c.iter().map(|p| p.strip_prefix(&src).unwrap().display().to_string()).collect();
            panic!("{krate}: import cycle {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let p = |s: &str| PathBuf::from(s);
    let mut g = BTreeMap::new();
    g.insert(p("a"), BTreeSet::from([p("b")]));
    g.insert(p("b"), BTreeSet::from([p("c")]));
    g.insert(p("c"), BTreeSet::from([p("a")]));
    g.insert(p("d"), BTreeSet::new());
    let c = find_cycle(&g).expect("cycle");
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
    g.insert(p("c"), BTreeSet::from([p("d")]));
    assert!(find_cycle(&g).is_none());
}
