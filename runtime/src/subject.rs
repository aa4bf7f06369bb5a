//! NATS-style subjects and patterns.
//!
//! A subject is a dot-separated list of non-empty tokens (`orders.eu.created`). A pattern may use
//! `*` for exactly one token and `>` as its last token for one or more remaining tokens, exactly as
//! NATS does, so that local pub-sub maps one-to-one onto NATS subjects when hosts are clustered.

use std::fmt;

/// Why a subject or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// The subject or pattern is empty.
    #[error("subject is empty")]
    Empty,
    /// A token between dots is empty (`a..b`, `.a`, `a.`).
    #[error("subject `{0}` has an empty token")]
    EmptyToken(String),
    /// A token contains whitespace.
    #[error("subject `{0}` contains whitespace")]
    Whitespace(String),
    /// A wildcard appears in a subject that is published to.
    #[error("subject `{0}` contains a wildcard; publish to a concrete subject")]
    WildcardInSubject(String),
    /// `>` appears other than as the last token, or a wildcard is part of a longer token.
    #[error("pattern `{0}` misuses a wildcard: `*` must be a whole token and `>` the last token")]
    BadWildcard(String),
}

fn check_tokens(s: &str) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    if s.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace(s.to_owned()));
    }
    if s.split('.').any(str::is_empty) {
        return Err(SubjectError::EmptyToken(s.to_owned()));
    }
    Ok(())
}

/// Checks a concrete subject (no wildcards), as used by `publish`.
///
/// ```
/// use bunraku_runtime::subject::validate_subject;
/// assert!(validate_subject("orders.eu").is_ok());
/// assert!(validate_subject("orders.*").is_err());
/// ```
pub fn validate_subject(subject: &str) -> Result<(), SubjectError> {
    check_tokens(subject)?;
    if subject
        .split('.')
        .any(|t| t.contains('*') || t.contains('>'))
    {
        return Err(SubjectError::WildcardInSubject(subject.to_owned()));
    }
    Ok(())
}

/// A parsed subscription pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Token {
    Literal(String),
    One,
    Rest,
}

impl Pattern {
    /// Parses a pattern such as `a.b`, `a.*.c` or `a.>`.
    ///
    /// ```
    /// use bunraku_runtime::subject::Pattern;
    /// let p = Pattern::parse("sensors.*.temp").unwrap();
    /// assert!(p.matches("sensors.kitchen.temp"));
    /// assert!(!p.matches("sensors.kitchen.humidity"));
    /// assert!(Pattern::parse("a.>.b").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, SubjectError> {
        check_tokens(text)?;
        let raw: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
            tokens.push(match *t {
                "*" => Token::One,
                ">" if i + 1 == raw.len() => Token::Rest,
                t if t.contains('*') || t.contains('>') => {
                    return Err(SubjectError::BadWildcard(text.to_owned()));
                }
                t => Token::Literal(t.to_owned()),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard.
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether a concrete subject matches this pattern.
    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// Whether every subject this pattern matches is also matched by `other`
    /// (`a.b` is contained in `a.*` and in `>`; `a.*` is not contained in `a.b`).
    pub fn is_contained_in(&self, other: &Pattern) -> bool {
        let (mut i, mut j) = (0, 0);
        loop {
            match (self.tokens.get(i), other.tokens.get(j)) {
                (None, None) => return true,
                (_, Some(Token::Rest)) => return self.tokens.len() > i,
                (Some(Token::Rest), _) => return false,
                (Some(_), None) | (None, Some(_)) => return false,
                (Some(_), Some(Token::One)) => {}
                (Some(Token::Literal(a)), Some(Token::Literal(b))) if a == b => {}
                (Some(_), Some(Token::Literal(_))) => return false,
            }
            i += 1;
            j += 1;
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::parse(p).unwrap().matches(s)
    }

    #[test]
    fn literal_patterns_match_only_the_same_subject() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b.c", "a.b.d"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(m("a.*.c", "a.b.c"));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
    }

    #[test]
    fn gt_matches_one_or_more_trailing_tokens() {
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c.d"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "x"));
        assert!(m(">", "x.y"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        assert_eq!(Pattern::parse(""), Err(SubjectError::Empty));
        assert_eq!(
            Pattern::parse("a..b"),
            Err(SubjectError::EmptyToken("a..b".into()))
        );
        assert_eq!(
            Pattern::parse("a."),
            Err(SubjectError::EmptyToken("a.".into()))
        );
        assert_eq!(
            Pattern::parse("a.>.b"),
            Err(SubjectError::BadWildcard("a.>.b".into()))
        );
        assert_eq!(
            Pattern::parse("a.b*"),
            Err(SubjectError::BadWildcard("a.b*".into()))
        );
        assert_eq!(
            Pattern::parse("a b"),
            Err(SubjectError::Whitespace("a b".into()))
        );
        assert_eq!(
            validate_subject("a.*").unwrap_err().to_string(),
            "subject `a.*` contains a wildcard; publish to a concrete subject"
        );
    }

    #[test]
    fn containment_follows_nats_semantics() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("a.b").is_contained_in(&p("a.b")));
        assert!(p("a.b").is_contained_in(&p("a.*")));
        assert!(p("a.b").is_contained_in(&p(">")));
        assert!(p("a.*").is_contained_in(&p("a.>")));
        assert!(!p("a.*").is_contained_in(&p("a.b")));
        assert!(!p(">").is_contained_in(&p("a.>")));
        assert!(!p("a.>").is_contained_in(&p("a.*")));
        assert!(!p("a").is_contained_in(&p("a.>")));
    }
}
