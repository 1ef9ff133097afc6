//! Go-template expansion of alert labels and annotations, as Prometheus expands them.
//!
//! Templates are Go `text/template`s (the `gtmpl` crate: actions, pipelines, variables, `if`,
//! `range`, `with`, comparisons, `index`, `len` ...), run with Prometheus's data and
//! convenience variables:
//!
//! ```text
//!   {{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}<text>
//! ```
//!
//! plus these of Prometheus's template functions: `humanize`, `humanize1024`,
//! `humanizePercentage`, `humanizeDuration`, `humanizeTimestamp`, `toUpper`, `toLower`, `title`,
//! `match`, `reReplaceAll`, `stripPort`, `printf` (Go's verbs `%s %v %d %f %e %g %q %x %%` with
//! flags, width and precision). Functions that need a query engine (`query`, `first`, `label`,
//! `value`, `sortByLabel`) are not provided: a template calling them fails to load with
//! "function ... not defined", never expands silently.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, FuncError, Template, Value};

/// Prometheus's convenience variables, put in front of every template.
const PRELUDE: &str =
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// What a template sees.
#[derive(Debug, Clone)]
pub struct TemplateData<'a> {
    /// The alert's series labels (`$labels`).
    pub labels: BTreeMap<&'a str, &'a str>,
    /// The ruler's external labels (`$externalLabels`).
    pub external_labels: &'a BTreeMap<String, String>,
    /// The external URL (`$externalURL`).
    pub external_url: &'a str,
    /// The sample value (`$value`).
    pub value: f64,
}

/// A parsed template: checked at rule-file load, expanded at every evaluation.
pub struct RuleTemplate {
    text: String,
    /// None for literal text (recording-rule labels, text without actions).
    tmpl: Option<Template>,
}

impl std::fmt::Debug for RuleTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleTemplate").field("text", &self.text).finish()
    }
}

fn new_template() -> Template {
    let mut t = Template::default();
    let funcs: [(&str, gtmpl::Func); 12] = [
        ("humanize", humanize),
        ("humanize1024", humanize1024),
        ("humanizePercentage", humanize_percentage),
        ("humanizeDuration", humanize_duration),
        ("humanizeTimestamp", humanize_timestamp),
        ("toUpper", to_upper),
        ("toLower", to_lower),
        ("title", title),
        ("match", re_match),
        ("reReplaceAll", re_replace_all),
        ("stripPort", strip_port),
        ("printf", printf),
    ];
    t.add_funcs(&funcs);
    t
}

impl RuleTemplate {
    /// Parses `text` (a label value or an annotation); the error says what is wrong.
    pub fn parse(text: &str) -> Result<RuleTemplate, String> {
        if !text.contains("{{") {
            return Ok(Self::literal(text));
        }
        check_actions_closed(text)?;
        let mut tmpl = new_template();
        tmpl.parse(format!("{PRELUDE}{text}")).map_err(|e| e.to_string())?;
        Ok(RuleTemplate { text: text.to_string(), tmpl: Some(tmpl) })
    }

    /// Text used as it is, never expanded (recording-rule label values).
    pub fn literal(text: &str) -> RuleTemplate {
        RuleTemplate { text: text.to_string(), tmpl: None }
    }

    /// The template's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Expands the template over `data`; the error is Go's execution error text.
    pub fn expand(&self, data: &TemplateData<'_>) -> Result<String, String> {
        let Some(tmpl) = &self.tmpl else { return Ok(self.text.clone()) };
        let labels: HashMap<String, Value> =
            data.labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let ext: HashMap<String, Value> =
            data.external_labels.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        let root: HashMap<String, Value> = HashMap::from([
            ("Labels".to_string(), Value::from(labels)),
            ("ExternalLabels".to_string(), Value::from(ext)),
            ("ExternalURL".to_string(), Value::from(data.external_url)),
            ("Value".to_string(), Value::from(data.value)),
        ]);
        tmpl.render(&Context::from(Value::from(root))).map_err(|e| e.to_string())
    }
}

/// Fails on an action opened and never closed (`{{` without `}}`), which Go reports as
/// "unclosed action" (the gtmpl lexer would loop on it).
fn check_actions_closed(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => rest = &after[close + 2..],
            None => {
                let line = text[..text.len() - rest.len() + open].matches('\n').count() + 1;
                return Err(format!("template: {line}: unclosed action"));
            }
        }
    }
    Ok(())
}

fn generic(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn one_arg<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

/// A number argument: numbers as they are, strings parsed as Go's `strconv.ParseFloat` would.
fn float_arg(name: &str, args: &[Value]) -> Result<f64, FuncError> {
    match one_arg(name, args)? {
        Value::Number(n) => num_f64(n).ok_or_else(|| generic(format!("{name}: not a number"))),
        Value::String(s) => parse_go_float(s).ok_or_else(|| generic(format!("{name}: cannot parse {s:?} as a number"))),
        other => Err(generic(format!("{name}: cannot convert {other} to a number"))),
    }
}

/// A template number as a float, whether gtmpl holds it as a float or an integer.
fn num_f64<N: std::fmt::Display>(n: &N) -> Option<f64> {
    parse_go_float(&n.to_string())
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s.trim() {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

fn string_arg(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(generic(format!("{name}: expected a string, got {other}"))),
    }
}

const BIG: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

fn humanize(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = float_arg("humanize", args)?;
    if v == 0.0 || !v.is_finite() {
        return Ok(format_g(v, 4).into());
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in BIG {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in SMALL {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    Ok(format!("{}{prefix}", format_g(v, 4)).into())
}

fn humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = float_arg("humanize1024", args)?;
    if v.abs() <= 1.0 || !v.is_finite() {
        return Ok(format_g(v, 4).into());
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(format!("{}{prefix}", format_g(v, 4)).into())
}

fn humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg("humanizePercentage", args)?;
    Ok(format!("{}%", format_g(v * 100.0, 4)).into())
}

fn humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = float_arg("humanizeDuration", args)?;
    if !v.is_finite() {
        return Ok(format_g(v, 4).into());
    }
    if v == 0.0 {
        return Ok(format!("{}s", format_g(v, 4)).into());
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (days, hours, minutes, seconds) = (d / 86400, (d / 3600) % 24, (d / 60) % 60, d % 60);
        return Ok(if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", format_g(v, 4))
        }
        .into());
    }
    let mut prefix = "";
    for p in SMALL {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(format!("{}{prefix}s", format_g(v, 4)).into())
}

fn humanize_timestamp(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg("humanizeTimestamp", args)?;
    if !v.is_finite() {
        return Ok(format_g(v, 4).into());
    }
    let secs = v.floor();
    let nanos = ((v - secs) * 1e9).round() as u32;
    let t = chrono::DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))
        .ok_or_else(|| generic(format!("humanizeTimestamp: {v} is out of range")))?;
    // Go's time.Time String(): "2006-01-02 15:04:05.999999999 -0700 MST"
    let frac = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_string() };
    Ok(format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S")).into())
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(string_arg("toUpper", one_arg("toUpper", args)?)?.to_uppercase().into())
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(string_arg("toLower", one_arg("toLower", args)?)?.to_lowercase().into())
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("title", one_arg("title", args)?)?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    Ok(out.into())
}

fn re_match(args: &[Value]) -> Result<Value, FuncError> {
    let [pat, s] = args else { return Err(FuncError::ExactlyXArgs("match".into(), 2)) };
    let re = regex::Regex::new(&string_arg("match", pat)?).map_err(|e| generic(format!("match: {e}")))?;
    Ok(re.is_match(&string_arg("match", s)?).into())
}

fn re_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    let [pat, repl, s] = args else { return Err(FuncError::ExactlyXArgs("reReplaceAll".into(), 3)) };
    let re = regex::Regex::new(&string_arg("reReplaceAll", pat)?).map_err(|e| generic(format!("reReplaceAll: {e}")))?;
    let repl = string_arg("reReplaceAll", repl)?;
    Ok(re.replace_all(&string_arg("reReplaceAll", s)?, repl.as_str()).into_owned().into())
}

fn strip_port(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg("stripPort", one_arg("stripPort", args)?)?;
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once("]:") {
            return Ok(host.to_string().into());
        }
        return Ok(s.into());
    }
    match s.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => Ok(host.to_string().into()),
        _ => Ok(s.into()),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use.
fn printf(args: &[Value]) -> Result<Value, FuncError> {
    let Some((fmt, rest)) = args.split_first() else { return Err(FuncError::AtLeastXArgs("printf".into(), 1)) };
    let fmt = string_arg("printf", fmt)?;
    go_sprintf(&fmt, rest).map(Value::from).map_err(generic)
}

/// Formats `args` by the Go format string `fmt` (verbs `%s %v %d %f %F %e %g %q %x %t %%`, flags
/// `-+ 0#`, width and precision). Missing or extra arguments are written as Go writes them
/// (`%!d(MISSING)`, `%!(EXTRA ...)`).
pub fn go_sprintf(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut next_arg = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = it.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = None;
        while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            it.next();
        }
        let mut prec = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = 0;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                it.next();
            }
            prec = Some(p);
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next_arg += 1;
        let num = match arg {
            Value::Number(n) => num_f64(n),
            _ => None,
        };
        let is_int = matches!(arg, Value::Number(n) if n.as_i64().is_some() || n.as_u64().is_some());
        let body = match (verb, arg) {
            ('s' | 'v', Value::String(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('q', Value::String(s)) => serde_json::to_string(s).map_err(|e| e.to_string())?,
            ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('t' | 'v', Value::Bool(b)) => b.to_string(),
            ('d', _) if is_int => num.map(|f| format!("{}", f as i64)).unwrap_or_default(),
            ('v', _) if is_int => num.map(|f| format!("{}", f as i64)).unwrap_or_default(),
            ('v', Value::Number(_)) => num.map(|f| format_g(f, usize::MAX)).unwrap_or_default(),
            ('f' | 'F', Value::Number(_)) => num.map(|f| format_f(f, prec.unwrap_or(6))).unwrap_or_default(),
            ('e', Value::Number(_)) => num.map(|f| format_e(f, prec.unwrap_or(6))).unwrap_or_default(),
            ('g', Value::Number(_)) => num.map(|f| format_g(f, prec.unwrap_or(usize::MAX))).unwrap_or_default(),
            ('x', Value::Number(_)) if is_int => num.map(|f| format!("{:x}", f as i64)).unwrap_or_default(),
            _ => {
                out.push_str(&format!("%!{verb}({arg})"));
                continue;
            }
        };
        let body = if num.is_some()
            && !body.starts_with('-')
            && (plus || space)
            && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g' | 'v')
        {
            format!("{}{body}", if plus { '+' } else { ' ' })
        } else {
            body
        };
        let w = width.unwrap_or(0);
        let len = body.chars().count();
        if len >= w {
            out.push_str(&body);
        } else if minus {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', w - len));
        } else if zero && num.is_some() {
            let (sign, digits) = match body.strip_prefix(['-', '+', ' ']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', w - len));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', w - len));
            out.push_str(&body);
        }
    }
    if next_arg < args.len() {
        let extra: Vec<String> = args[next_arg..].iter().map(|a| format!("{a}")).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        None
    }
}

/// Go's `%.{prec}f`.
fn format_f(v: f64, prec: usize) -> String {
    special(v).unwrap_or_else(|| format!("{v:.prec$}"))
}

/// Go's `%.{prec}e`: mantissa, `e`, sign, at least two exponent digits.
fn format_e(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let s = format!("{v:.prec$e}");
    go_exponent(&s)
}

/// Go's `%e` with the shortest precision that round-trips (`strconv.FormatFloat(v, 'e', -1, 64)`).
pub(crate) fn format_e_shortest(v: f64) -> String {
    special(v).unwrap_or_else(|| go_exponent(&format!("{v:e}")))
}

/// Rewrites Rust's `1.5e6` / `1.5e-7` exponent as Go's `1.5e+06` / `1.5e-07`.
fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

/// Go's `%.{prec}g` (`prec == usize::MAX`: the shortest representation, as `%v`): `%e` when the
/// exponent is below -4 or at least the precision (21 for the shortest form), else `%f`, without
/// trailing zeros.
pub fn format_g(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // the digits after rounding to `prec` significant digits decide the exponent
    let (digits, exp) = if prec == usize::MAX {
        let s = format!("{:e}", v.abs());
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        (m.replace('.', ""), e.parse::<i32>().unwrap_or(0))
    } else {
        let p = prec.max(1);
        let s = format!("{:.*e}", p - 1, v.abs());
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        (m.replace('.', "").trim_end_matches('0').to_string(), e.parse::<i32>().unwrap_or(0))
    };
    let digits = if digits.is_empty() { "0".to_string() } else { digits };
    let eprec = if prec == usize::MAX { 21 } else { prec.max(1) as i32 };
    let sign = if v < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let mant = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let (esign, eabs) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
        return format!("{sign}{mant}e{esign}{eabs:02}");
    }
    let body = if exp < 0 {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            format!("{digits}{}", "0".repeat(int_len - digits.len()))
        } else {
            format!("{}.{}", &digits[..int_len], &digits[int_len..])
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn expand(text: &str, labels: &[(&str, &str)], value: f64) -> Result<String, String> {
        let ext = BTreeMap::from([("cluster".to_string(), "eu1".to_string())]);
        let data = TemplateData {
            labels: labels.iter().copied().collect(),
            external_labels: &ext,
            external_url: "http://ruler:10902",
            value,
        };
        RuleTemplate::parse(text)?.expand(&data)
    }

    #[test]
    fn variables_and_functions() {
        let l = [("instance", "host-1:9100"), ("job", "node")];
        assert_eq!(expand("{{ $labels.instance }} of {{$labels.job}}", &l, 1.0).unwrap(), "host-1:9100 of node");
        assert_eq!(expand("{{ .Labels.job }} in {{ $externalLabels.cluster }}", &l, 1.0).unwrap(), "node in eu1");
        assert_eq!(expand("v={{ $value }}", &l, 0.25).unwrap(), "v=0.25");
        assert_eq!(expand("{{ $value | humanize }}", &l, 1_234_567.0).unwrap(), "1.235M");
        assert_eq!(expand("{{ humanize 0.00012 }}", &l, 0.0).unwrap(), "120u");
        assert_eq!(expand("{{ humanizePercentage $value }}", &l, 0.1234).unwrap(), "12.34%");
        assert_eq!(expand("{{ humanizeDuration $value }}", &l, 93784.0).unwrap(), "1d 2h 3m 4s");
        assert_eq!(expand("{{ humanizeDuration $value }}", &l, 0.05).unwrap(), "50ms");
        assert_eq!(expand("{{ humanizeDuration $value }}", &l, 42.5).unwrap(), "42.5s");
        assert_eq!(expand("{{ humanize1024 $value }}", &l, 2048.0).unwrap(), "2ki");
        assert_eq!(expand(r#"{{ printf "%.2f" $value }}"#, &l, 1.23456).unwrap(), "1.23");
        assert_eq!(expand(r#"{{ printf "%s=%d" "x" 7 }}"#, &l, 0.0).unwrap(), "x=7");
        assert_eq!(expand(r#"{{ printf "%5.1f|%-4s|" $value "ab" }}"#, &l, 2.25).unwrap(), "  2.2|ab  |");
        assert_eq!(expand("{{ $labels.instance | stripPort | toUpper }}", &l, 0.0).unwrap(), "HOST-1");
        assert_eq!(expand(r#"{{ if gt $value 10.0 }}high{{ else }}low{{ end }}"#, &l, 11.0).unwrap(), "high");
        assert_eq!(expand("plain text", &l, 0.0).unwrap(), "plain text");
    }

    #[test]
    fn unsupported_and_broken_templates_fail() {
        let err = RuleTemplate::parse(r#"{{ query "up" }}"#).unwrap_err();
        assert!(err.contains("query"), "{err}");
        assert!(RuleTemplate::parse("{{ $labels.x ").is_err());
        assert!(RuleTemplate::parse("{{ if }}").is_err());
    }

    #[test]
    fn go_float_formats() {
        assert_eq!(format_g(1234.5678, 4), "1235");
        assert_eq!(format_g(1.0, 4), "1");
        assert_eq!(format_g(0.0001234, 4), "0.0001234");
        assert_eq!(format_g(0.00001234, 4), "1.234e-05");
        assert_eq!(format_g(12345678.0, 4), "1.235e+07");
        assert_eq!(format_g(100.0, 4), "100");
        assert_eq!(format_g(999.99, 4), "1000");
        assert_eq!(format_g(9999.9, 4), "1e+04");
        assert_eq!(format_g(0.1, usize::MAX), "0.1");
        assert_eq!(format_g(1e21, usize::MAX), "1e+21");
        assert_eq!(format_g(-2.5, 4), "-2.5");
        assert_eq!(format_e(1234.5, 2), "1.23e+03");
        assert_eq!(format_g(f64::INFINITY, 4), "+Inf");
    }
}
