//! A small subset of Go's text/template, evaluated over JSON values — what `--format` of
//! docker's inspect commands is used for: `{{.State.Status}}`, `{{json .Config}}`,
//! `{{index .Config.Labels "k"}}`, `{{range .Mounts}}{{.Source}} {{end}}`, `{{if .State.Running}}…
//! {{else}}…{{end}}`, `{{with .X}}…{{end}}`, pipelines (`{{.Name | upper}}`), parentheses,
//! `$` for the root, `{{-`/`-}}` trimming. Functions: json, index, len, join, upper, lower, title,
//! split, print, println, printf (%s %d %v %q). Values print as Go's `%v` would print the
//! decoded JSON (lists `[a b]`, objects `map[k:v]`, missing keys `<no value>`).
//! (Crates exist — gtmpl — but they evaluate over their own value type without docker's `json`
//! and would need the same conversion layer; this is smaller.)

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    Range(Pipe, Vec<Node>, Vec<Node>),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
}

type Pipe = Vec<Cmd>;
type Cmd = Vec<Arg>;

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B` (empty path = `.`), from the root with `$`.
    Field {
        root: bool,
        path: Vec<String>,
    },
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Pipe),
}

/// Why a template could not be parsed or run.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

fn err<T>(s: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(s.into()))
}

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let items = lex(src)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&items, &mut pos)?;
        if let Some(e) = end {
            return err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Runs the template over `v`.
    pub fn render(&self, v: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec(&self.nodes, v, v, &mut out)?;
        Ok(out)
    }
}

/// Items of the source: text, or the inside of an action.
enum Item {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = vec![];
    let mut rest = src;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut text = rest[..i].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[i + 2..];
        let trim_prev = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_prev {
            text = text.trim_end().to_string();
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        let Some(j) = after.find("}}") else { return err("unclosed action") };
        let mut inner = &after[..j];
        if trim_prev {
            inner = &inner[1..];
        }
        trim_next = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        items.push(Item::Action(inner.trim().to_string()));
        rest = &after[j + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// Parses nodes until `{{end}}`/`{{else}}` (returned) or the end.
fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = vec![];
    while *pos < items.len() {
        let it = &items[*pos];
        *pos += 1;
        match it {
            Item::Text(t) => nodes.push(Node::Text(t.clone())),
            Item::Action(a) => {
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" | "else" => return Ok((nodes, Some(kw.to_string()))),
                    "range" | "if" | "with" => {
                        let p = parse_pipe(rest)?;
                        let (body, end) = parse_list(items, pos)?;
                        let alt = match end.as_deref() {
                            Some("end") => vec![],
                            Some("else") => match parse_list(items, pos)? {
                                (alt, Some(e)) if e == "end" => alt,
                                _ => return err(format!("missing {{{{end}}}} of {kw}")),
                            },
                            _ => return err(format!("missing {{{{end}}}} of {kw}")),
                        };
                        nodes.push(match kw {
                            "range" => Node::Range(p, body, alt),
                            "if" => Node::If(p, body, alt),
                            _ => Node::With(p, body, alt),
                        });
                    }
                    _ if a.starts_with("/*") => {}
                    _ => nodes.push(Node::Action(parse_pipe(a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Pipe,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut out = vec![];
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '"' | '`' => {
                let q = c;
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&ch) = cs.get(i) else { return err("unterminated string") };
                    i += 1;
                    if ch == q {
                        break;
                    }
                    if ch == '\\' && q == '"' {
                        let Some(&e) = cs.get(i) else { return err("unterminated string") };
                        i += 1;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        s.push(ch);
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let start = i;
                while i < cs.len() && !" \t\n\r()|\"".contains(cs[i]) {
                    i += 1;
                }
                out.push(Tok::Word(cs[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

fn parse_pipe(s: &str) -> Result<Pipe, TemplateError> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let p = parse_pipe_toks(&toks, &mut pos)?;
    if pos != toks.len() {
        return err(format!("unexpected {:?} in {s:?}", toks[pos]));
    }
    Ok(p)
}

fn parse_pipe_toks(toks: &[Tok], pos: &mut usize) -> Result<Pipe, TemplateError> {
    let mut pipe = vec![];
    let mut cmd = vec![];
    while *pos < toks.len() {
        let t = toks[*pos].clone();
        *pos += 1;
        match t {
            Tok::RParen => {
                *pos -= 1;
                break;
            }
            Tok::Pipe => {
                if cmd.is_empty() {
                    return err("missing command before |");
                }
                pipe.push(std::mem::take(&mut cmd));
            }
            Tok::LParen => {
                let sub = parse_pipe_toks(toks, pos)?;
                if toks.get(*pos) != Some(&Tok::RParen) {
                    return err("unclosed (");
                }
                *pos += 1;
                cmd.push(Arg::Sub(sub));
            }
            Tok::Str(s) => cmd.push(Arg::Str(s)),
            Tok::Word(w) => cmd.push(word(&w)?),
        }
    }
    if cmd.is_empty() {
        return err("empty command");
    }
    pipe.push(cmd);
    Ok(pipe)
}

fn word(w: &str) -> Result<Arg, TemplateError> {
    if w == "." {
        return Ok(Arg::Field { root: false, path: vec![] });
    }
    if let Some(p) = w.strip_prefix('$') {
        let path = p.split('.').filter(|s| !s.is_empty()).map(String::from).collect();
        return Ok(Arg::Field { root: true, path });
    }
    if let Some(rest) = w.strip_prefix('.') {
        let path = rest.split('.').map(String::from).collect::<Vec<_>>();
        if path.iter().any(|p| p.is_empty()) {
            return err(format!("bad field {w}"));
        }
        return Ok(Arg::Field { root: false, path });
    }
    match w {
        "true" => return Ok(Arg::Bool(true)),
        "false" => return Ok(Arg::Bool(false)),
        _ => {}
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Arg::Num(n));
    }
    if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(Arg::Func(w.to_string()));
    }
    err(format!("unexpected {w:?}"))
}

/// A value, or a missing map key.
fn lookup(v: &Value, path: &[String]) -> Option<Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur.clone())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Go's `%v` of a decoded JSON value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:e}").replace("e", "e+"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            format!("map[{}]", keys.iter().map(|k| format!("{k}:{}", go_print(&o[*k]))).collect::<Vec<_>>().join(" "))
        }
    }
}

const NO_VALUE: &str = "<no value>";

fn eval_arg(a: &Arg, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    Ok(match a {
        Arg::Field { root: r, path } => {
            lookup(if *r { root } else { dot }, path).unwrap_or_else(|| Value::String(NO_VALUE.into()))
        }
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => serde_json::Number::from_f64(*n)
            .map(|x| if n.fract() == 0.0 { Value::from(*n as i64) } else { Value::Number(x) })
            .unwrap_or(Value::Null),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Sub(p) => eval_pipe(p, dot, root)?,
        Arg::Func(f) => call(f, vec![])?,
    })
}

fn eval_pipe(p: &Pipe, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for cmd in p {
        let v = match &cmd[0] {
            Arg::Func(f) => {
                let mut args = cmd[1..].iter().map(|a| eval_arg(a, dot, root)).collect::<Result<Vec<_>, _>>()?;
                args.extend(prev.take());
                call(f, args)?
            }
            a => {
                if cmd.len() > 1 || prev.is_some() {
                    return err(format!("can't give argument to non-function {a:?}"));
                }
                eval_arg(a, dot, root)?
            }
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn as_text(v: &Value) -> String {
    go_print(v)
}

fn call(f: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let one = |args: &[Value]| -> Result<Value, TemplateError> {
        match args {
            [a] => Ok(a.clone()),
            _ => err(format!("wrong number of args for {f}: want 1 got {}", args.len())),
        }
    };
    Ok(match f {
        "json" => Value::String(serde_json::to_string(&one(&args)?).unwrap_or_default()),
        "upper" => Value::String(as_text(&one(&args)?).to_uppercase()),
        "lower" => Value::String(as_text(&one(&args)?).to_lowercase()),
        "title" => {
            let s = as_text(&one(&args)?);
            let mut c = s.chars();
            Value::String(c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default())
        }
        "len" => Value::from(match one(&args)? {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            Value::String(s) => s.len(),
            other => return err(format!("len of {}", go_print(&other))),
        }),
        "index" => {
            let mut it = args.into_iter();
            let mut v = it.next().ok_or_else(|| TemplateError("index of nothing".into()))?;
            for k in it {
                v = match (&v, &k) {
                    (Value::Object(o), Value::String(s)) => o.get(s).cloned().unwrap_or(Value::String(NO_VALUE.into())),
                    (Value::Array(a), Value::Number(n)) => a
                        .get(n.as_u64().unwrap_or(u64::MAX) as usize)
                        .cloned()
                        .ok_or_else(|| TemplateError(format!("index out of range: {n}")))?,
                    _ => return err(format!("can't index {} with {}", go_print(&v), go_print(&k))),
                };
            }
            v
        }
        "join" => match args.as_slice() {
            [Value::Array(a), sep] => Value::String(a.iter().map(as_text).collect::<Vec<_>>().join(&as_text(sep))),
            [Value::Null, _] => Value::String(String::new()),
            _ => return err("join wants a list and a separator"),
        },
        "split" => match args.as_slice() {
            [s, sep] => Value::Array(as_text(s).split(&as_text(sep)).map(|x| Value::String(x.into())).collect()),
            _ => return err("split wants a string and a separator"),
        },
        "print" => Value::String(args.iter().map(as_text).collect::<Vec<_>>().join("")),
        "println" => Value::String(format!("{}\n", args.iter().map(as_text).collect::<Vec<_>>().join(" "))),
        "printf" => {
            let mut it = args.into_iter();
            let fmt = it.next().map(|f| as_text(&f)).unwrap_or_default();
            let mut out = String::new();
            let mut chars = fmt.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some('q') => out.push_str(&format!("{:?}", as_text(&it.next().unwrap_or(Value::Null)))),
                    Some(_) => out.push_str(&as_text(&it.next().unwrap_or(Value::Null))),
                    None => out.push('%'),
                }
            }
            Value::String(out)
        }
        "table" => return err("table formats are not supported; use a template without 'table'"),
        other => return err(format!("function \"{other}\" not defined")),
    })
}

fn exec(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&as_text(&eval_pipe(p, dot, root)?)),
            Node::If(p, body, alt) => {
                let v = eval_pipe(p, dot, root)?;
                exec(if truthy(&v) { body } else { alt }, dot, root, out)?;
            }
            Node::With(p, body, alt) => {
                let v = eval_pipe(p, dot, root)?;
                if truthy(&v) {
                    exec(body, &v, root, out)?;
                } else {
                    exec(alt, dot, root, out)?;
                }
            }
            Node::Range(p, body, alt) => {
                let v = eval_pipe(p, dot, root)?;
                let items: Vec<Value> = match v {
                    Value::Array(a) => a,
                    Value::Object(o) => {
                        let mut keys: Vec<_> = o.keys().cloned().collect();
                        keys.sort();
                        keys.into_iter().map(|k| o[&k].clone()).collect()
                    }
                    Value::Null => vec![],
                    other => return err(format!("range can't iterate over {}", go_print(&other))),
                };
                if items.is_empty() {
                    exec(alt, dot, root, out)?;
                }
                for it in &items {
                    exec(body, it, root, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Renders `format` over each value, one line each (docker's inspect `-f`).
pub fn render_lines(format: &str, values: &[Value]) -> Result<String, TemplateError> {
    let t = Template::parse(format)?;
    let mut out = String::new();
    for v in values {
        out.push_str(&t.render(v)?);
        out.push('\n');
    }
    Ok(out)
}

/// docker's `--format` of a list (`ps`, `images`, `volume ls`, `stats`): `\t` and `\n` written
/// in the format stand for a tab and a newline; a format that starts with `table` prints a
/// header row first (each field's header from `headers`, else its name in capitals) and aligns
/// the tab-separated columns as docker's tabwriter does (each cell padded to its column's widest
/// plus 3 spaces, at least 10 characters; the last cell of a line is not padded). Any other
/// format prints one line per value; `json` (or `{{json .}}`) prints each value as one JSON line.
pub fn render_list(format: &str, values: &[Value], headers: &[(&str, &str)]) -> Result<String, TemplateError> {
    if matches!(format.trim(), "json" | "{{json .}}") {
        return Ok(values.iter().map(|v| format!("{v}\n")).collect());
    }
    let f = format.replace("\\t", "\t").replace("\\n", "\n");
    let Some(body) = f.strip_prefix("table") else {
        return render_lines(&f, values);
    };
    let t = Template::parse(body.trim_start_matches(' '))?;
    let mut head = serde_json::Map::new();
    for v in values.iter().take(1) {
        if let Value::Object(m) = v {
            for k in m.keys() {
                head.insert(k.clone(), Value::String(k.to_uppercase()));
            }
        }
    }
    for (k, h) in headers {
        head.insert(k.to_string(), Value::String(h.to_string()));
    }
    let mut lines = vec![t.render(&Value::Object(head))?];
    for v in values {
        lines.push(t.render(v)?);
    }
    Ok(align_tabs(&lines.join("\n")))
}

/// Go's `tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)` (docker's table writer) over `text`.
fn align_tabs(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = vec![];
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn docker_inspect_formats() {
        let v = json!({
            "Name": "/web", "State": {"Status": "running", "Running": true, "Pid": 42},
            "Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"a": "1", "b": "2"}, "Entrypoint": null},
            "Mounts": [{"Source": "/s1", "Destination": "/d1"}, {"Source": "/s2", "Destination": "/d2"}],
        });
        assert_eq!(r("{{.State.Status}}", &v), "running");
        assert_eq!(r("{{.Name}} {{.State.Pid}}", &v), "/web 42");
        assert_eq!(r("{{json .Config.Cmd}}", &v), r#"["sh","-c","x"]"#);
        assert_eq!(r("{{.Config.Cmd}}", &v), "[sh -c x]");
        assert_eq!(r("{{.Config.Labels}}", &v), "map[a:1 b:2]");
        assert_eq!(r(r#"{{index .Config.Labels "b"}}"#, &v), "2");
        assert_eq!(r("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", &v), "/s1:/d1 /s2:/d2 ");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}", &v), "up");
        assert_eq!(r("{{with .State}}{{.Status}}{{end}}", &v), "running");
        assert_eq!(r("{{.Name | upper}}", &v), "/WEB");
        assert_eq!(r("{{len .Mounts}} {{join .Config.Cmd \",\"}}", &v), "2 sh,-c,x");
        assert_eq!(r("{{json (index .Mounts 1)}}", &v), r#"{"Destination":"/d2","Source":"/s2"}"#);
        assert_eq!(r("{{range .Mounts -}}\n {{$.Name}}\n{{- end}}", &v), "/web/web");
        assert_eq!(r("{{.Nope}}", &v), "<no value>");
        assert_eq!(r("{{printf \"%s=%d\" .Name .State.Pid}}", &v), "/web=42");
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{bogus .X}}").unwrap().render(&v).is_err());
    }

    #[test]
    fn docker_list_formats() {
        let vals = vec![
            json!({"ID": "abc", "Names": "web", "Status": "Up 2 seconds"}),
            json!({"ID": "d", "Names": "a-long-name-here", "Status": "Exited (0)"}),
        ];
        let h = [("ID", "CONTAINER ID")];
        // `table`: docker's headers, columns aligned (>= 10 wide, 3 spaces of padding).
        assert_eq!(
            render_list("table {{.ID}}\\t{{.Names}}\\t{{.Status}}", &vals, &h).unwrap(),
            "CONTAINER ID   NAMES              STATUS\nabc            web                Up 2 seconds\nd              a-long-name-here   Exited (0)\n"
        );
        assert_eq!(render_list("table {{.Names}}", &vals, &h).unwrap(), "NAMES\nweb\na-long-name-here\n");
        // Without `table`: one line per value, `\t` is a tab.
        assert_eq!(render_list("{{.ID}}\\t{{.Names}}", &vals, &h).unwrap(), "abc\tweb\nd\ta-long-name-here\n");
    }
}
