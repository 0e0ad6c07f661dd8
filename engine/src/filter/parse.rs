//! The `--where` grammar ([`super::Filter::parse`]): a tokenizer that keeps each token's
//! character position and a recursive-descent parser that reports the first unexpected
//! token with that position.

use tessera_storage::ExternalId;

use super::{Cmp, Filter, Scalar};

/// Nesting deeper than this is refused rather than risking the parser's stack.
const MAX_DEPTH: usize = 64;

/// A filter expression that does not follow the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("filter syntax error at character {position}: {message} (in `{text}`)")]
pub struct FilterParseError {
    /// 0-based character position of the problem in the text.
    pub position: usize,
    /// What was expected or wrong there.
    pub message: String,
    /// The text parsed.
    pub text: String,
}

impl FilterParseError {
    /// The text with a caret under the position, on two lines, for people.
    pub fn pointer(&self) -> String {
        format!("{}\n{}^", self.text, " ".repeat(self.position))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Field(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    At,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Quoted(s) => format!("the string {s:?}"),
            Tok::Field(f) => format!("the field `{f}`"),
            Tok::Num(x) => format!("the number {x}"),
            Tok::Op(o) => format!("`{o}`"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::At => "`@`".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '@' => Tok::At,
            '=' => Tok::Op("="),
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 1;
                Tok::Op("!=")
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                if eq {
                    i += 1;
                }
                Tok::Op(match (c, eq) {
                    ('<', false) => "<",
                    ('<', true) => "<=",
                    ('>', false) => ">",
                    _ => ">=",
                })
            }
            '"' | '\'' | '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err((start, format!("unterminated {c}quote{c}")));
                        }
                        Some(&q) if q == c => break,
                        Some('\\') if c != '`' => {
                            i += 1;
                            match chars.get(i) {
                                Some(&e) => s.push(e),
                                None => return Err((start, format!("unterminated {c}quote{c}"))),
                            }
                        }
                        Some(&x) => s.push(x),
                    }
                    i += 1;
                }
                if c == '`' {
                    Tok::Field(s)
                } else {
                    Tok::Quoted(s)
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '.' | '+' | '-'))
                {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                let x: f64 = s
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite())
                    .ok_or_else(|| (start, format!("`{s}` is not a number")))?;
                i = j - 1;
                Tok::Num(if x == 0.0 { 0.0 } else { x })
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '.' | '-'))
                {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                i = j - 1;
                Tok::Word(s)
            }
            other => return Err((start, format!("unexpected character {other:?}"))),
        };
        out.push((tok, start));
        i += 1;
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

type Parsed<T> = Result<T, (usize, String)>;

fn keyword(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
}

const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "exists", "true", "false", "null"];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn at(&self) -> usize {
        self.toks[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn expected<T>(&self, what: &str) -> Parsed<T> {
        Err((
            self.at(),
            format!("expected {what}, found {}", self.peek().describe()),
        ))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if keyword(self.peek(), kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Parsed<Filter> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((self.at(), format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let mut terms = vec![self.and()?];
        while self.eat_keyword("or") {
            terms.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Or(terms)
        })
    }

    fn and(&mut self) -> Parsed<Filter> {
        let mut terms = vec![self.unary()?];
        while self.eat_keyword("and") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::And(terms)
        })
    }

    fn unary(&mut self) -> Parsed<Filter> {
        if self.eat_keyword("not") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err((self.at(), format!("nested deeper than {MAX_DEPTH} levels")));
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(inner.not());
        }
        self.primary()
    }

    fn primary(&mut self) -> Parsed<Filter> {
        match self.peek().clone() {
            Tok::LParen => {
                self.next();
                let e = self.expr()?;
                if *self.peek() != Tok::RParen {
                    return self.expected("`)`");
                }
                self.next();
                Ok(e)
            }
            Tok::At => {
                self.next();
                if !self.eat_keyword("id") {
                    return self.expected("`id` after `@`");
                }
                let negate = self.eat_keyword("not");
                if !self.eat_keyword("in") {
                    return self.expected("`IN` after `@id`");
                }
                let ids = self
                    .list()?
                    .into_iter()
                    .map(|(v, at)| match v {
                        Scalar::Str(s) => Ok(ExternalId::Str(s)),
                        Scalar::Num(x) if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(64) => {
                            Ok(ExternalId::Int(x as u64))
                        }
                        other => Err((
                            at,
                            format!("an id is a string or a non-negative integer, not {other}"),
                        )),
                    })
                    .collect::<Parsed<Vec<_>>>()?;
                let f = Filter::Ids(ids);
                Ok(if negate { f.not() } else { f })
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("exists") => {
                self.next();
                let field = self.field()?;
                Ok(Filter::Exists(field))
            }
            _ => self.comparison(),
        }
    }

    fn field(&mut self) -> Parsed<String> {
        match self.peek().clone() {
            Tok::Field(f) if !f.is_empty() => {
                self.next();
                Ok(f)
            }
            Tok::Word(w) if !KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                self.next();
                Ok(w)
            }
            _ => self.expected("a field name (quote a keyword as `name`)"),
        }
    }

    fn comparison(&mut self) -> Parsed<Filter> {
        let field = self.field()?;
        let negate = self.eat_keyword("not");
        if self.eat_keyword("in") {
            let values = self.list()?.into_iter().map(|(v, _)| v).collect();
            let f = Filter::In(field, values);
            return Ok(if negate { f.not() } else { f });
        }
        if negate {
            return self.expected("`IN` after `NOT`");
        }
        let op = match self.peek() {
            Tok::Op(o) => *o,
            _ => return self.expected("`=`, `!=`, `<`, `<=`, `>`, `>=`, `IN` or `NOT IN`"),
        };
        self.next();
        let at = self.at();
        let value = self.value()?;
        let range = |cmp| match &value {
            Scalar::Num(_) | Scalar::Str(_) => Ok(Filter::Range(field.clone(), cmp, value.clone())),
            other => Err((
                at,
                format!("`{op}` compares numbers or strings, not {}", other.kind()),
            )),
        };
        match op {
            "=" => Ok(Filter::Eq(field, value)),
            "!=" => Ok(Filter::Eq(field, value).not()),
            "<" => range(Cmp::Lt),
            "<=" => range(Cmp::Le),
            ">" => range(Cmp::Gt),
            _ => range(Cmp::Ge),
        }
    }

    fn value(&mut self) -> Parsed<Scalar> {
        let v = match self.peek().clone() {
            Tok::Quoted(s) => Scalar::Str(s),
            Tok::Num(x) => Scalar::Num(x),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Scalar::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Scalar::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Scalar::Null,
            _ => {
                return self
                    .expected("a value (a \"quoted string\", a number, true, false or null)");
            }
        };
        self.next();
        Ok(v)
    }

    /// `( [value (, value)*] )`, each value with its position.
    fn list(&mut self) -> Parsed<Vec<(Scalar, usize)>> {
        if *self.peek() != Tok::LParen {
            return self.expected("`(` to open the list");
        }
        self.next();
        let mut out = Vec::new();
        if *self.peek() == Tok::RParen {
            self.next();
            return Ok(out);
        }
        loop {
            let at = self.at();
            out.push((self.value()?, at));
            match self.peek() {
                Tok::Comma => {}
                Tok::RParen => {
                    self.next();
                    return Ok(out);
                }
                _ => return self.expected("`,` or `)`"),
            }
            self.next();
        }
    }
}

pub(super) fn parse(text: &str) -> Result<Filter, FilterParseError> {
    let fail = |(position, message): (usize, String)| FilterParseError {
        position,
        message,
        text: text.to_owned(),
    };
    let toks = tokenize(text).map_err(fail)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    if *p.peek() == Tok::End {
        return Err(fail((0, "the filter is empty".into())));
    }
    let f = p.expr().map_err(fail)?;
    if *p.peek() != Tok::End {
        return Err(fail((
            p.at(),
            format!(
                "expected `AND`, `OR` or the end, found {}",
                p.peek().describe()
            ),
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_example_parses_to_its_tree() {
        let f = parse(r#"lang = "en" AND year >= 2020 AND NOT tag IN ("a","b") AND EXISTS author"#)
            .expect("parses");
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::eq("lang", "en"),
                Filter::range("year", Cmp::Ge, 2020.0),
                Filter::one_of("tag", vec!["a".into(), "b".into()]).not(),
                Filter::exists("author"),
            ])
        );
    }

    #[test]
    fn or_binds_looser_than_and_and_parentheses_group() {
        let f = parse("a = 1 or b = 2 and c = 3").expect("parses");
        assert_eq!(
            f,
            Filter::Or(vec![
                Filter::eq("a", 1.0),
                Filter::And(vec![Filter::eq("b", 2.0), Filter::eq("c", 3.0)])
            ])
        );
        let g = parse("(a = 1 OR b = 2) AND c != 'x'").expect("parses");
        assert_eq!(
            g,
            Filter::And(vec![
                Filter::Or(vec![Filter::eq("a", 1.0), Filter::eq("b", 2.0)]),
                Filter::eq("c", "x").not()
            ])
        );
    }

    #[test]
    fn id_lists_take_strings_and_integers_and_may_be_empty() {
        assert_eq!(
            parse(r#"@id IN ("doc-1", 7)"#).expect("parses"),
            Filter::Ids(vec![ExternalId::from("doc-1"), ExternalId::Int(7)])
        );
        assert_eq!(parse("@id in ()").expect("parses"), Filter::Ids(vec![]));
        let e = parse("@id IN (1.5)").expect_err("not an id");
        assert_eq!(e.position, 8);
    }

    #[test]
    fn syntax_errors_name_the_position_and_what_was_expected() {
        for (text, position, needle) in [
            ("lang = ", 7, "expected a value"),
            ("lang == 'en'", 6, "expected a value"),
            ("year >= 2020 AND", 16, "expected a field name"),
            ("(a = 1", 6, "expected `)`"),
            ("a = 1 b = 2", 6, "expected `AND`, `OR` or the end"),
            ("tag IN ('a' 'b')", 12, "expected `,` or `)`"),
            ("tag IN ('a',", 12, "expected a value"),
            ("tag IN ('a'", 11, "expected `,` or `)`"),
            ("tag IN 'a'", 7, "expected `(`"),
            ("a = 'open", 4, "unterminated"),
            ("a = #", 4, "unexpected character"),
            ("a > true", 4, "compares numbers or strings"),
            ("", 0, "empty"),
            ("a NOT = 1", 6, "expected `IN` after `NOT`"),
            ("x = 1e999", 4, "is not a number"),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(
                e.to_string().contains(&format!("character {position}")),
                "{e}"
            );
            assert!(e.pointer().ends_with('^'), "{}", e.pointer());
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&text).is_err());
        let nots = format!("{}a = 1", "NOT ".repeat(10_000));
        assert!(parse(&nots).is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(text in ".{0,60}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.position <= text.chars().count());
            }
        }
    }
}
