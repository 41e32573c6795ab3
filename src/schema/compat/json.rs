//! JSON Schema compatibility: can every value the writer's schema accepts also be read
//! with the reader's schema?
//!
//! The rules follow what Confluent's registry treats as breaking (its `Difference.Type`
//! names are used in the messages). With the writer the old schema and the reader the new
//! one (BACKWARD), these are incompatible:
//!
//! - `TYPE_CHANGED` / `TYPE_NARROWED`: the reader accepts fewer JSON types (`integer` →
//!   `number` widens and is fine; `number` → `integer` narrows);
//! - `REQUIRED_ATTRIBUTE_ADDED`: a new required property without a `default`;
//! - `PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL`: a property with a constraining schema added
//!   while the writer allowed any additional property (old data may hold anything there);
//!   adding a property to a closed model (`additionalProperties: false`) is compatible;
//! - `PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL` and `ADDITIONAL_PROPERTIES_REMOVED` /
//!   `…NARROWED`: the reader closes or narrows what the writer allowed;
//! - `ENUM_ARRAY_NARROWED` (a removed enum value), `ENUM_ARRAY_ADDED`, `CONST_CHANGED`;
//! - `MAX_LENGTH_ADDED|DECREASED`, `MIN_LENGTH_ADDED|INCREASED`, `PATTERN_ADDED|CHANGED`,
//!   `MAXIMUM_…`, `MINIMUM_…`, `EXCLUSIVE_…`, `MULTIPLE_OF_…`, `MAX_ITEMS_…`, `MIN_ITEMS_…`,
//!   `UNIQUE_ITEMS_ADDED`, `MAX_PROPERTIES_…`, `MIN_PROPERTIES_…`, `DEPENDENCY_…_ADDED`;
//! - `SUM_TYPE_NARROWED`: a writer `anyOf`/`oneOf` branch no reader branch accepts;
//!   `PRODUCT_TYPE_EXTENDED`: a reader `allOf` member the writer does not satisfy;
//!   `NOT_TYPE_EXTENDED`: a changed `not`.
//!
//! The opposite changes (widening, relaxing, removing constraints) are compatible. Local
//! `$ref`s (`#/definitions/…`, `#/$defs/…`) are followed; recursion is cut at a pair of
//! references already being compared.
//!
//! Alternatives (`anyOf`/`oneOf`/`allOf`) are tried branch against branch, which a crafted
//! chain of references makes exponential; one check therefore has a budget of
//! [`MAX_COMPARISONS`] schema comparisons shared by all its branches, and a pair of schemas
//! that needs more is reported `TOO_COMPLEX` (incompatible) instead of running for hours.

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;

use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$id",
    "id",
    "$schema",
    "readOnly",
    "writeOnly",
    "deprecated",
    "definitions",
    "$defs",
    "$anchor",
    "format",
];

/// How many schema comparisons one compatibility check may make, over all the branches it
/// tries; real schemas need a few thousand at most.
pub const MAX_COMPARISONS: u32 = 100_000;

/// Checks that data valid for `writer` is valid for `reader`; returns the problems found.
pub fn check(writer: &Value, reader: &Value) -> Vec<String> {
    let mut c = Checker {
        wroot: writer,
        rroot: reader,
        out: Vec::new(),
        seen: HashSet::new(),
        budget: Rc::new(Budget { left: Cell::new(MAX_COMPARISONS), exhausted: Cell::new(false) }),
    };
    c.cmp(writer, reader, "#");
    // Alternatives are tried by sub-checkers whose output is dropped: say it at the top.
    if c.budget.exhausted.get() && !c.out.iter().any(|e| e.starts_with("TOO_COMPLEX")) {
        c.report("TOO_COMPLEX", "#", format!("comparing these schemas takes more than {MAX_COMPARISONS} steps"));
    }
    c.out
}

/// The comparisons one check may still make.
struct Budget {
    left: Cell<u32>,
    /// A comparison was refused for want of budget: the check's answer is incomplete.
    exhausted: Cell<bool>,
}

struct Checker<'a> {
    wroot: &'a Value,
    rroot: &'a Value,
    out: Vec<String>,
    seen: HashSet<(String, String)>,
    /// Comparisons left, shared with every sub-checker of the same check.
    budget: Rc<Budget>,
}

fn is_unconstrained(s: &Value) -> bool {
    match s {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => true,
    }
}

fn types_of(s: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match s.get("type")? {
        Value::String(t) => Some([t.clone()].into()),
        Value::Array(ts) => Some(ts.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()),
        _ => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn join(path: &str, seg: &str) -> String {
    format!("{path}/{seg}")
}

impl<'a> Checker<'a> {
    fn report(&mut self, kind: &str, path: &str, detail: String) {
        self.out.push(format!("{kind} at {path}: {detail}"));
    }

    /// Follows a local `$ref` (repeatedly); `None` for a reference that does not resolve.
    fn deref(&self, root: &'a Value, mut s: &'a Value) -> Option<(&'a Value, Option<String>)> {
        let mut last = None;
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with('#') => {
                    last = Some(r.to_owned());
                    s = root.pointer(&r[1..])?;
                }
                _ => return Some((s, last)),
            }
        }
        None
    }

    /// A checker for one alternative: the same roots, references and budget, its own output.
    fn sub(&self) -> Checker<'a> {
        Checker {
            wroot: self.wroot,
            rroot: self.rroot,
            out: Vec::new(),
            seen: self.seen.clone(),
            budget: Rc::clone(&self.budget),
        }
    }

    fn ok(&self, w: &'a Value, r: &'a Value) -> bool {
        let mut sub = self.sub();
        sub.cmp(w, r, "#");
        sub.out.is_empty()
    }

    fn cmp(&mut self, w: &'a Value, r: &'a Value, path: &str) {
        let Some(left) = self.budget.left.get().checked_sub(1) else {
            self.budget.exhausted.set(true);
            return self.report(
                "TOO_COMPLEX",
                path,
                format!("comparing these schemas takes more than {MAX_COMPARISONS} steps"),
            );
        };
        self.budget.left.set(left);
        let (Some((w, wref)), Some((r, rref))) = (self.deref(self.wroot, w), self.deref(self.rroot, r)) else {
            return self.report("REFERENCE_UNRESOLVED", path, "a $ref does not resolve".into());
        };
        if wref.is_some() || rref.is_some() {
            let key = (wref.unwrap_or_default(), rref.unwrap_or_default());
            if !self.seen.insert(key) {
                return;
            }
        }
        if is_unconstrained(r) || w == &Value::Bool(false) {
            return;
        }
        if r == &Value::Bool(false) {
            return self.report("TYPE_NARROWED", path, "the reader accepts nothing".into());
        }
        let wm = w.as_object().unwrap_or(empty_map());
        let rm = r.as_object().unwrap_or(empty_map());

        // Combined types first: each writer branch must be read by some reader branch.
        for key in ["anyOf", "oneOf"] {
            if let Some(rb) = rm.get(key).and_then(Value::as_array) {
                let wb: Vec<&Value> = match wm.get("anyOf").or(wm.get("oneOf")).and_then(Value::as_array) {
                    Some(b) => b.iter().collect(),
                    None => vec![w],
                };
                for (i, b) in wb.iter().enumerate() {
                    if !rb.iter().any(|r| self.ok(b, r)) {
                        self.report(
                            "SUM_TYPE_NARROWED",
                            path,
                            format!("writer branch {i} is accepted by no {key} branch"),
                        );
                    }
                }
                return self.cmp_rest(wm, rm, path, &["anyOf", "oneOf"]);
            }
        }
        if let Some(wb) = wm.get("anyOf").or(wm.get("oneOf")).and_then(Value::as_array) {
            for (i, b) in wb.iter().enumerate() {
                let mut sub = self.sub();
                sub.cmp(b, r, &format!("{path}/anyOf/{i}"));
                self.out.append(&mut sub.out);
            }
            return;
        }
        if let Some(members) = rm.get("allOf").and_then(Value::as_array) {
            for (i, m) in members.iter().enumerate() {
                if !self.ok(w, m)
                    && !wm.get("allOf").and_then(Value::as_array).is_some_and(|wa| wa.iter().any(|x| self.ok(x, m)))
                {
                    self.report(
                        "PRODUCT_TYPE_EXTENDED",
                        path,
                        format!("reader allOf member {i} is not satisfied by the writer"),
                    );
                }
            }
            return self.cmp_rest(wm, rm, path, &["allOf"]);
        }
        self.cmp_keywords(wm, rm, path);
    }

    /// Compares what is left of two objects once `skip` keywords were handled.
    fn cmp_rest(&mut self, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str, skip: &[&str]) {
        let strip = |m: &Map<String, Value>| -> Map<String, Value> {
            m.iter().filter(|(k, _)| !skip.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let r = Value::Object(strip(rm));
        if is_unconstrained(&r) {
            return;
        }
        let w = Value::Object(strip(wm));
        let mut sub = self.sub();
        sub.cmp_keywords(w.as_object().expect("object"), r.as_object().expect("object"), path);
        self.out.append(&mut sub.out);
    }

    fn cmp_keywords(&mut self, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) {
        if let Some(n) = rm.get("not") {
            if wm.get("not") != Some(n) {
                self.report("NOT_TYPE_EXTENDED", path, "the reader's 'not' differs from the writer's".into());
            }
        }
        self.cmp_values(wm, rm, path);
        let wtypes = types_of(wm).or_else(|| value_types(wm));
        if let Some(rtypes) = types_of(rm) {
            match &wtypes {
                None => self.report(
                    "TYPE_NARROWED",
                    path,
                    format!("the reader only accepts {rtypes:?}; the writer any type"),
                ),
                Some(wt) => {
                    let missing: Vec<&String> = wt
                        .iter()
                        .filter(|t| !(rtypes.contains(*t) || (t.as_str() == "integer" && rtypes.contains("number"))))
                        .collect();
                    if !missing.is_empty() {
                        let kind =
                            if wt.len() > 1 && missing.len() < wt.len() { "TYPE_NARROWED" } else { "TYPE_CHANGED" };
                        self.report(
                            kind,
                            path,
                            format!("writer type {wt:?} is not accepted by reader type {rtypes:?}"),
                        );
                    }
                }
            }
        }
        let may = |t: &str| wtypes.as_ref().is_none_or(|w| w.contains(t) || (t == "number" && w.contains("integer")));
        if may("string") {
            self.limit(wm, rm, path, "maxLength", true, "MAX_LENGTH");
            self.limit(wm, rm, path, "minLength", false, "MIN_LENGTH");
            if let Some(p) = rm.get("pattern") {
                match wm.get("pattern") {
                    Some(wp) if wp == p => {}
                    Some(_) => self.report("PATTERN_CHANGED", path, "the pattern changed".into()),
                    None => self.report("PATTERN_ADDED", path, "the reader added a pattern".into()),
                }
            }
        }
        if may("number") {
            self.limit(wm, rm, path, "maximum", true, "MAXIMUM");
            self.limit(wm, rm, path, "minimum", false, "MINIMUM");
            self.limit(wm, rm, path, "exclusiveMaximum", true, "EXCLUSIVE_MAXIMUM");
            self.limit(wm, rm, path, "exclusiveMinimum", false, "EXCLUSIVE_MINIMUM");
            if let Some(rmul) = num(rm, "multipleOf") {
                match num(wm, "multipleOf") {
                    Some(wmul) if (wmul / rmul).fract().abs() < 1e-9 => {}
                    Some(_) => self.report(
                        "MULTIPLE_OF_CHANGED",
                        path,
                        format!("multipleOf {rmul} does not divide the writer's"),
                    ),
                    None => self.report("MULTIPLE_OF_ADDED", path, format!("the reader added multipleOf {rmul}")),
                }
            }
        }
        if may("object") {
            self.cmp_object(wm, rm, path);
        }
        if may("array") {
            self.cmp_array(wm, rm, path);
        }
    }

    /// `enum` and `const`: the reader must accept every value the writer allows.
    fn cmp_values(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) {
        let allowed = |m: &Map<String, Value>| -> Option<Vec<Value>> {
            m.get("const").map(|c| vec![c.clone()]).or_else(|| m.get("enum").and_then(Value::as_array).cloned())
        };
        if let Some(r) = allowed(rm) {
            match allowed(wm) {
                None => self.report("ENUM_ARRAY_ADDED", path, "the reader restricts values to an enum or const".into()),
                Some(w) => {
                    let removed: Vec<&Value> = w.iter().filter(|v| !r.contains(v)).collect();
                    if !removed.is_empty() {
                        let kind = if rm.contains_key("const") { "CONST_CHANGED" } else { "ENUM_ARRAY_NARROWED" };
                        let removed = removed.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
                        self.report(kind, path, format!("the reader no longer accepts {removed}"));
                    }
                }
            }
        }
    }

    /// An upper (`upper`) or lower bound: the reader's must be absent or at least as loose.
    fn limit(
        &mut self,
        wm: &Map<String, Value>,
        rm: &Map<String, Value>,
        path: &str,
        key: &str,
        upper: bool,
        name: &str,
    ) {
        let Some(r) = num(rm, key) else { return };
        // An absent count minimum is 0: a reader's `minLength: 0` adds nothing.
        let floor = (!upper && key.starts_with("min")).then_some(0.0);
        match num(wm, key).or(floor) {
            None => self.report(&format!("{name}_ADDED"), path, format!("the reader added {key} {r}")),
            Some(w) if (upper && r < w) || (!upper && r > w) => {
                let change = if upper { "DECREASED" } else { "INCREASED" };
                self.report(&format!("{name}_{change}"), path, format!("{key} changed from {w} to {r}"));
            }
            _ => {}
        }
    }

    fn cmp_object(&mut self, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) {
        static TRUE: Value = Value::Bool(true);
        let empty = empty_map();
        let wp = wm.get("properties").and_then(Value::as_object).unwrap_or(empty);
        let rp = rm.get("properties").and_then(Value::as_object).unwrap_or(empty);
        let wadd = wm.get("additionalProperties").unwrap_or(&TRUE);
        let radd = rm.get("additionalProperties").unwrap_or(&TRUE);
        for (name, rs) in rp {
            let ppath = join(&join(path, "properties"), name);
            match wp.get(name) {
                Some(ws) => self.cmp(ws, rs, &ppath),
                None if wadd == &TRUE => {
                    if !is_unconstrained(rs) {
                        self.report(
                            "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
                            &ppath,
                            format!("property '{name}' added while the writer allowed any additional property"),
                        );
                    }
                }
                None => {
                    let mut sub = self.sub();
                    sub.cmp(wadd, rs, &ppath);
                    if !sub.out.is_empty() && wadd != &Value::Bool(false) {
                        self.report(
                            "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                            &ppath,
                            sub.out.join("; "),
                        );
                    }
                }
            }
        }
        for (name, ws) in wp {
            if rp.contains_key(name) {
                continue;
            }
            let ppath = join(&join(path, "properties"), name);
            if radd == &Value::Bool(false) {
                self.report(
                    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                    &ppath,
                    format!("property '{name}' removed while the reader allows no additional property"),
                );
            } else if radd != &TRUE {
                let mut sub = self.sub();
                sub.cmp(ws, radd, &ppath);
                if !sub.out.is_empty() {
                    self.report(
                        "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                        &ppath,
                        sub.out.join("; "),
                    );
                }
            }
        }
        if radd != &TRUE && wadd != &Value::Bool(false) {
            if radd == &Value::Bool(false) {
                self.report("ADDITIONAL_PROPERTIES_REMOVED", path, "the reader allows no additional property".into());
            } else {
                let mut sub = self.sub();
                sub.cmp(wadd, radd, &join(path, "additionalProperties"));
                if !sub.out.is_empty() {
                    self.report("ADDITIONAL_PROPERTIES_NARROWED", path, sub.out.join("; "));
                }
            }
        }
        let wreq: BTreeSet<&str> =
            wm.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for name in rm.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            let has_default = rp.get(name).is_some_and(|s| s.get("default").is_some());
            if !wreq.contains(name) && !has_default {
                self.report(
                    "REQUIRED_ATTRIBUTE_ADDED",
                    path,
                    format!("property '{name}' is required by the reader only"),
                );
            }
        }
        self.limit(wm, rm, path, "maxProperties", true, "MAX_PROPERTIES");
        self.limit(wm, rm, path, "minProperties", false, "MIN_PROPERTIES");
        for key in ["dependencies", "dependentRequired", "dependentSchemas"] {
            let Some(rdeps) = rm.get(key).and_then(Value::as_object) else { continue };
            let wdeps = wm.get(key).and_then(Value::as_object);
            for (prop, rdep) in rdeps {
                let covered = match (wdeps.and_then(|w| w.get(prop)), rdep) {
                    (Some(Value::Array(w)), Value::Array(r)) => r.iter().all(|x| w.contains(x)),
                    (Some(w), r) => w == r,
                    (None, _) => false,
                };
                if !covered {
                    self.report("DEPENDENCY_ADDED", path, format!("the reader added a {key} entry for '{prop}'"));
                }
            }
        }
    }

    fn cmp_array(&mut self, wm: &'a Map<String, Value>, rm: &'a Map<String, Value>, path: &str) {
        static TRUE: Value = Value::Bool(true);
        // Tuple positions: `prefixItems` (2020-12) or an `items` array (draft 7), then the
        // schema for the remaining items (`items` / `additionalItems`).
        fn split(m: &Map<String, Value>) -> (Vec<&Value>, &Value) {
            if let Some(p) = m.get("prefixItems").and_then(Value::as_array) {
                return (p.iter().collect(), m.get("items").unwrap_or(&TRUE));
            }
            match m.get("items") {
                Some(Value::Array(p)) => (p.iter().collect(), m.get("additionalItems").unwrap_or(&TRUE)),
                Some(s) => (Vec::new(), s),
                None => (Vec::new(), &TRUE),
            }
        }
        let (wt, wrest) = split(wm);
        let (rt, rrest) = split(rm);
        for i in 0..wt.len().max(rt.len()) {
            let w = wt.get(i).copied().unwrap_or(wrest);
            let r = rt.get(i).copied().unwrap_or(rrest);
            self.cmp(w, r, &join(&join(path, "items"), &i.to_string()));
        }
        if !is_unconstrained(rrest) {
            self.cmp(wrest, rrest, &join(path, "items"));
        }
        self.limit(wm, rm, path, "maxItems", true, "MAX_ITEMS");
        self.limit(wm, rm, path, "minItems", false, "MIN_ITEMS");
        if rm.get("uniqueItems") == Some(&Value::Bool(true)) && wm.get("uniqueItems") != Some(&Value::Bool(true)) {
            self.report("UNIQUE_ITEMS_ADDED", path, "the reader requires unique items".into());
        }
    }
}

/// The JSON types of the values an `enum`/`const` allows, when the schema names no type.
fn value_types(m: &Map<String, Value>) -> Option<BTreeSet<String>> {
    let vals: Vec<&Value> = match (m.get("const"), m.get("enum")) {
        (Some(c), _) => vec![c],
        (None, Some(Value::Array(e))) => e.iter().collect(),
        _ => return None,
    };
    Some(vals.into_iter().map(|v| json_type(v).to_owned()).collect())
}
