//! The OData `filter` of `:execute`: which connections the commands apply to, e.g.
//! `startswith(userId, 'listener-')`, `'vip' in groups and not (connectionId eq 'c1')`.
//!
//! Supported: the identifiers `userId` and `connectionId` (strings, `null` when a connection has
//! no user) and `groups` (only as `'name' in groups`); string (`'it''s'`), integer, `true`,
//! `false` and `null` literals; `eq ne lt le gt ge`; `in` with `groups` or a list
//! (`userId in ('a', 'b')`); `and or not` and parentheses; the functions `startswith`,
//! `endswith`, `contains`, `tolower`, `toupper`, `trim`, `length`, `concat`, `indexof`,
//! `substring`. Keywords and identifiers are case-insensitive; values compare case-sensitively.

/// Why a filter cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub(crate) struct FilterError(String);

fn error<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

/// What a filter is evaluated against: one connection.
pub(crate) trait Subject {
    /// The connection id.
    fn connection_id(&self) -> &str;
    /// The user id, if any.
    fn user_id(&self) -> Option<&str>;
    /// Whether the connection is in `group`.
    fn in_group(&self, group: &str) -> bool;
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter(Expr);

impl Filter {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Self, FilterError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, at: 0 };
        let expr = parser.or()?;
        if parser.at != parser.tokens.len() {
            return error(format!("unexpected {:?}", parser.tokens[parser.at]));
        }
        Ok(Filter(expr))
    }

    /// Whether `subject` matches.
    pub(crate) fn matches(&self, subject: &dyn Subject) -> bool {
        self.0.eval(subject)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Str(String),
    Int(i64),
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return error("unterminated string"),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(value));
            }
            _ if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let value = text
                    .parse::<i64>()
                    .map_err(|_| FilterError(format!("invalid number {text:?}")))?;
                tokens.push(Token::Int(value));
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return error(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    StartsWith,
    EndsWith,
    Contains,
    ToLower,
    ToUpper,
    Trim,
    Length,
    Concat,
    IndexOf,
    Substring,
}

impl Function {
    fn from_name(name: &str) -> Option<(Self, std::ops::RangeInclusive<usize>)> {
        Some(match name.to_ascii_lowercase().as_str() {
            "startswith" => (Function::StartsWith, 2..=2),
            "endswith" => (Function::EndsWith, 2..=2),
            "contains" => (Function::Contains, 2..=2),
            "tolower" => (Function::ToLower, 1..=1),
            "toupper" => (Function::ToUpper, 1..=1),
            "trim" => (Function::Trim, 1..=1),
            "length" => (Function::Length, 1..=1),
            "concat" => (Function::Concat, 2..=2),
            "indexof" => (Function::IndexOf, 2..=2),
            "substring" => (Function::Substring, 2..=3),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
    UserId,
    ConnectionId,
    Call(Function, Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Compare, Value, Value),
    InGroups(Value),
    InList(Value, Vec<Value>),
    Value(Value),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, token: &Token) -> Result<(), FilterError> {
        match self.next() {
            Some(ref t) if t == token => Ok(()),
            other => error(format!("expected {token:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(&Token::Close)?;
            return Ok(inner);
        }
        let left = self.value()?;
        let compare = match self.peek() {
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => Some(Compare::Eq),
                "ne" => Some(Compare::Ne),
                "lt" => Some(Compare::Lt),
                "le" => Some(Compare::Le),
                "gt" => Some(Compare::Gt),
                "ge" => Some(Compare::Ge),
                "in" => {
                    self.at += 1;
                    return self.in_expression(left);
                }
                _ => None,
            },
            _ => None,
        };
        match compare {
            Some(compare) => {
                self.at += 1;
                Ok(Expr::Compare(compare, left, self.value()?))
            }
            None => Ok(Expr::Value(left)),
        }
    }

    fn in_expression(&mut self, left: Value) -> Result<Expr, FilterError> {
        match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("groups") => Ok(Expr::InGroups(left)),
            Some(Token::Open) => {
                let mut items = vec![self.value()?];
                while self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                    items.push(self.value()?);
                }
                self.expect(&Token::Close)?;
                Ok(Expr::InList(left, items))
            }
            other => error(format!(
                "expected groups or a list after in, found {other:?}"
            )),
        }
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Value::Str(s)),
            Some(Token::Int(i)) => Ok(Value::Int(i)),
            Some(Token::Word(word)) => match word.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "null" => Ok(Value::Null),
                "userid" => Ok(Value::UserId),
                "connectionid" => Ok(Value::ConnectionId),
                _ => match Function::from_name(&word) {
                    Some((function, arity)) => {
                        self.expect(&Token::Open)?;
                        let mut arguments = vec![self.value()?];
                        while self.peek() == Some(&Token::Comma) {
                            self.at += 1;
                            arguments.push(self.value()?);
                        }
                        self.expect(&Token::Close)?;
                        if !arity.contains(&arguments.len()) {
                            return error(format!("wrong number of arguments to {word}"));
                        }
                        Ok(Value::Call(function, arguments))
                    }
                    None => error(format!("unknown identifier or function {word:?}")),
                },
            },
            other => error(format!("expected a value, found {other:?}")),
        }
    }
}

/// A value once evaluated.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl Value {
    fn eval(&self, subject: &dyn Subject) -> Lit {
        match self {
            Value::Str(s) => Lit::Str(s.clone()),
            Value::Int(i) => Lit::Int(*i),
            Value::Bool(b) => Lit::Bool(*b),
            Value::Null => Lit::Null,
            Value::UserId => subject
                .user_id()
                .map_or(Lit::Null, |u| Lit::Str(u.to_owned())),
            Value::ConnectionId => Lit::Str(subject.connection_id().to_owned()),
            Value::Call(function, arguments) => {
                let values: Vec<Lit> = arguments.iter().map(|a| a.eval(subject)).collect();
                call(*function, &values)
            }
        }
    }
}

fn call(function: Function, values: &[Lit]) -> Lit {
    let text = |i: usize| match values.get(i) {
        Some(Lit::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let int = |i: usize| match values.get(i) {
        Some(Lit::Int(n)) => usize::try_from(*n).ok(),
        _ => None,
    };
    let count = |s: &str| i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let both = (text(0), text(1));
    match function {
        Function::StartsWith => both_bool(both, |a, b| a.starts_with(b)),
        Function::EndsWith => both_bool(both, |a, b| a.ends_with(b)),
        Function::Contains => both_bool(both, |a, b| a.contains(b)),
        Function::ToLower => text(0).map_or(Lit::Null, |s| Lit::Str(s.to_lowercase())),
        Function::ToUpper => text(0).map_or(Lit::Null, |s| Lit::Str(s.to_uppercase())),
        Function::Trim => text(0).map_or(Lit::Null, |s| Lit::Str(s.trim().to_owned())),
        Function::Length => text(0).map_or(Lit::Null, |s| Lit::Int(count(s))),
        Function::Concat => match both {
            (Some(a), Some(b)) => Lit::Str(format!("{a}{b}")),
            _ => Lit::Null,
        },
        Function::IndexOf => match both {
            (Some(a), Some(b)) => Lit::Int(a.find(b).map_or(-1, |at| count(&a[..at]))),
            _ => Lit::Null,
        },
        Function::Substring => match (text(0), int(1)) {
            (Some(s), Some(start)) => {
                let rest = s.chars().skip(start);
                Lit::Str(match int(2) {
                    Some(len) => rest.take(len).collect(),
                    None if values.len() > 2 => return Lit::Null,
                    None => rest.collect(),
                })
            }
            _ => Lit::Null,
        },
    }
}

fn both_bool(both: (Option<&str>, Option<&str>), f: impl Fn(&str, &str) -> bool) -> Lit {
    match both {
        (Some(a), Some(b)) => Lit::Bool(f(a, b)),
        _ => Lit::Bool(false),
    }
}

fn compare(op: Compare, left: &Lit, right: &Lit) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (left, right) {
        (Lit::Str(a), Lit::Str(b)) => Some(a.cmp(b)),
        (Lit::Int(a), Lit::Int(b)) => Some(a.cmp(b)),
        (Lit::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Lit::Null, Lit::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (Compare::Eq, Some(o)) => o == Ordering::Equal,
        (Compare::Ne, Some(o)) => o != Ordering::Equal,
        (Compare::Ne, None) => true,
        (Compare::Lt, Some(o)) => o == Ordering::Less,
        (Compare::Le, Some(o)) => o != Ordering::Greater,
        (Compare::Gt, Some(o)) => o == Ordering::Greater,
        (Compare::Ge, Some(o)) => o != Ordering::Less,
        (_, None) => false,
    }
}

impl Expr {
    fn eval(&self, subject: &dyn Subject) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(subject) || b.eval(subject),
            Expr::And(a, b) => a.eval(subject) && b.eval(subject),
            Expr::Not(a) => !a.eval(subject),
            Expr::Compare(op, a, b) => compare(*op, &a.eval(subject), &b.eval(subject)),
            Expr::InGroups(value) => match value.eval(subject) {
                Lit::Str(group) => subject.in_group(&group),
                _ => false,
            },
            Expr::InList(value, items) => {
                let value = value.eval(subject);
                items
                    .iter()
                    .any(|item| compare(Compare::Eq, &value, &item.eval(subject)))
            }
            Expr::Value(value) => value.eval(subject) == Lit::Bool(true),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    struct Conn {
        id: &'static str,
        user: Option<&'static str>,
        groups: &'static [&'static str],
    }

    impl Subject for Conn {
        fn connection_id(&self) -> &str {
            self.id
        }
        fn user_id(&self) -> Option<&str> {
            self.user
        }
        fn in_group(&self, group: &str) -> bool {
            self.groups.contains(&group)
        }
    }

    const LISTENER: Conn = Conn {
        id: "c1",
        user: Some("listener-1"),
        groups: &["vip", "it's"],
    };
    const ANONYMOUS: Conn = Conn {
        id: "c2",
        user: None,
        groups: &[],
    };

    fn check(filter: &str, listener: bool, anonymous: bool) {
        let parsed = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(parsed.matches(&LISTENER), listener, "{filter} (listener)");
        assert_eq!(
            parsed.matches(&ANONYMOUS),
            anonymous,
            "{filter} (anonymous)"
        );
    }

    #[test]
    fn filters() {
        check("startswith(userId, 'listener-')", true, false);
        check("userId eq 'listener-1'", true, false);
        check("userId ne 'listener-1'", false, true);
        check("userId eq null", false, true);
        check("connectionId eq 'c2' or 'vip' in groups", true, true);
        check(
            "'vip' in groups and not (connectionId eq 'c1')",
            false,
            false,
        );
        check("NOT ('vip' IN groups)", false, true);
        check("'it''s' in groups", true, false);
        check("connectionId in ('c1', 'c3')", true, false);
        check("length(userId) gt 5 and endswith(userId, '1')", true, false);
        check("tolower(toupper(connectionId)) eq 'c2'", false, true);
        check("contains(concat(connectionId, 'x'), '2x')", false, true);
        check("indexof(userId, '-') eq 8", true, false);
        check(
            "substring(userId, 9) eq '1' and substring(userId, 0, 3) eq 'lis'",
            true,
            false,
        );
        check("true", true, true);
        check("connectionId ge 'c2'", false, true);
    }

    #[test]
    fn bad_filters() {
        for bad in [
            "",
            "userId eq",
            "userId eq 'a",
            "unknown eq 'a'",
            "startswith(userId)",
            "(userId eq 'a'",
            "userId eq 'a' extra",
            "'a' in nothing",
            "userId % 'a'",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
