//! `-o jsonpath=TEMPLATE`: kubectl's JSONPath templates over a document of [`crate::doc`].
//!
//! Text outside braces is printed as is; `{.a.b}`, `{.items[0].x}`, `{.items[*].metadata.name}`,
//! `{.metadata.labels['app.kubernetes.io/name']}` and `{.}`/`{@}` print what they select (strings
//! bare, anything else as compact JSON, several results separated by a space);
//! `{range .items[*]}...{end}` repeats its body for each selected value (paths inside are
//! relative to it); `{"\n"}` and `{'\t'}` print a literal with `\n`, `\t` and `\\` escapes.
//! A path that selects nothing prints nothing (as kubectl's `--allow-missing-template-keys`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    All,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

impl Template {
    /// Parses `t`; the error names what is wrong and where.
    pub fn parse(t: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = t;
        let mut text = String::new();
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = find_close(after)
                .ok_or_else(|| format!("jsonpath {t:?}: `{{` without a closing `}}`"))?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Expr(after[..close].trim().to_string()));
            rest = &after[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let mut it = pieces.into_iter();
        let nodes = nest(&mut it, t, false)?;
        Ok(Template(nodes))
    }

    /// Runs the template over `v`.
    pub fn render(&self, v: &Value) -> String {
        let mut out = String::new();
        run(&self.0, v, &mut out);
        out
    }
}

enum Piece {
    Text(String),
    Expr(String),
}

fn find_close(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

fn nest(
    it: &mut impl Iterator<Item = Piece>,
    t: &str,
    in_range: bool,
) -> Result<Vec<Node>, String> {
    let mut out = Vec::new();
    while let Some(p) = it.next() {
        match p {
            Piece::Text(s) => out.push(Node::Text(s)),
            Piece::Expr(e) if e == "end" => {
                return if in_range {
                    Ok(out)
                } else {
                    Err(format!("jsonpath {t:?}: {{end}} without {{range}}"))
                };
            }
            Piece::Expr(e) => {
                if let Some(path) = e.strip_prefix("range ") {
                    let path = parse_path(path.trim(), t)?;
                    let body = nest(it, t, true)?;
                    out.push(Node::Range(path, body));
                } else if let Some(lit) = literal(&e) {
                    out.push(Node::Text(lit));
                } else {
                    out.push(Node::Path(parse_path(&e, t)?));
                }
            }
        }
    }
    if in_range {
        return Err(format!("jsonpath {t:?}: {{range}} without {{end}}"));
    }
    Ok(out)
}

fn literal(e: &str) -> Option<String> {
    let q = e.chars().next()?;
    if !(q == '"' || q == '\'') || e.len() < 2 || !e.ends_with(q) {
        return None;
    }
    let mut out = String::new();
    let mut chars = e[1..e.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_path(e: &str, t: &str) -> Result<Vec<Step>, String> {
    let bad = |why: &str| format!("jsonpath {t:?}: {{{e}}}: {why}");
    let mut s = e.strip_prefix('$').unwrap_or(e);
    s = s.strip_prefix('@').unwrap_or(s);
    let mut steps = Vec::new();
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| bad("`[` without `]`"))?;
            let inner = r[..close].trim();
            steps.push(if inner == "*" {
                Step::All
            } else if let Some(k) = literal(inner) {
                Step::Key(k)
            } else {
                Step::Index(
                    inner
                        .parse()
                        .map_err(|_| bad("use [N], [*] or ['key'] between brackets"))?,
                )
            });
            s = &r[close + 1..];
        } else if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key == "*" {
                steps.push(Step::All);
            } else if !key.is_empty() {
                steps.push(Step::Key(key.to_string()));
            }
            s = &r[end..];
        } else {
            return Err(bad("a path starts with `.` (e.g. {.metadata.name})"));
        }
    }
    Ok(steps)
}

fn select<'a>(v: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let Some((first, rest)) = steps.split_first() else {
        return vec![v];
    };
    let next: Vec<&Value> = match (first, v) {
        (Step::Key(k), Value::Object(m)) => m.get(k).into_iter().collect(),
        (Step::Index(i), Value::Array(a)) => {
            let i = if *i < 0 { a.len() as i64 + i } else { *i };
            usize::try_from(i)
                .ok()
                .and_then(|i| a.get(i))
                .into_iter()
                .collect()
        }
        (Step::All, Value::Array(a)) => a.iter().collect(),
        (Step::All, Value::Object(m)) => m.values().collect(),
        _ => Vec::new(),
    };
    next.into_iter().flat_map(|n| select(n, rest)).collect()
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        o => o.to_string(),
    }
}

fn run(nodes: &[Node], v: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Path(p) => {
                let vals: Vec<String> = select(v, p).into_iter().map(show).collect();
                out.push_str(&vals.join(" "));
            }
            Node::Range(p, body) => {
                for x in select(v, p) {
                    run(body, x, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v)
    }

    #[test]
    fn kubectl_examples() {
        let v = json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.io/n": "x"}}, "spec": {"replicas": 2}},
            {"metadata": {"name": "b", "labels": {}}, "spec": {"replicas": 3}}
        ]});
        assert_eq!(r("{.items[*].metadata.name}", &v), "a b");
        assert_eq!(r("{.items[0].spec.replicas}", &v), "2");
        assert_eq!(r("{.items[-1].metadata.name}", &v), "b");
        assert_eq!(
            r(
                "{range .items[*]}{.metadata.name}={.spec.replicas}{\"\\n\"}{end}",
                &v
            ),
            "a=2\nb=3\n"
        );
        assert_eq!(r("{.items[0].metadata.labels['app.io/n']}", &v), "x");
        assert_eq!(r("kind: {.kind}!", &v), "kind: List!");
        assert_eq!(r("{.items[0].metadata.labels}", &v), "{\"app.io/n\":\"x\"}");
        assert_eq!(r("{.nothing.here}", &v), "");
        assert_eq!(r("{$.kind}", &v), "List");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (t, want) in [
            ("{.a", "without a closing"),
            ("{range .a}x", "without {end}"),
            ("{end}", "without {range}"),
            ("{.a[x]}", "between brackets"),
            ("{a.b}", "starts with `.`"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
