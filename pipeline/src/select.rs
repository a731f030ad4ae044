//! Choosing tables by name or glob (`orders`, `audit_*`, `log_202[45]`), with excludes.
//!
//! A pattern that matches nothing is an error that lists what exists, since a typo that
//! silently selects nothing would capture nothing. Matching is exact and case-sensitive
//! (SQLite table names are case-insensitive, but a pipeline that names a table two ways
//! is a pipeline that will be misread).

use globset::{Glob, GlobMatcher};

/// A compiled list of names and globs.
#[derive(Debug, Clone)]
pub struct Patterns {
    patterns: Vec<(String, GlobMatcher)>,
}

impl Patterns {
    /// Compiles `patterns`; a malformed glob is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Patterns, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Glob::new(p)
                    .map(|g| (p.clone(), g.compile_matcher()))
                    .map_err(|e| format!("table pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Patterns { patterns })
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `name` matches any pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|(_, g)| g.is_match(name))
    }

    /// The first pattern that matches none of `names`.
    pub fn unmatched<'a>(&'a self, names: &[String]) -> Option<&'a str> {
        self.patterns
            .iter()
            .find(|(_, g)| !names.iter().any(|n| g.is_match(n)))
            .map(|(p, _)| p.as_str())
    }
}

/// Whether `text` is a plain name rather than a glob.
pub fn is_literal(text: &str) -> bool {
    !text.contains(['*', '?', '[', ']', '{', '}'])
}

/// The names of `available` that `include` selects (all when it is empty) and `exclude`
/// does not, in the order of `available`.
pub fn select(
    available: &[String],
    include: &[String],
    exclude: &[String],
) -> Result<Vec<String>, String> {
    let include = Patterns::new(include)?;
    let exclude = Patterns::new(exclude)?;
    if let Some(p) = include.unmatched(available) {
        return Err(format!(
            "table pattern {p:?} matches no table; the tables are: {}",
            available.join(", ")
        ));
    }
    Ok(available
        .iter()
        .filter(|t| include.is_empty() || include.matches(t))
        .filter(|t| !exclude.matches(t))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_and_excludes_select_in_table_order() {
        let all = names(&["audit_a", "audit_tmp", "orders", "users"]);
        let got = select(&all, &names(&["audit_*", "users"]), &names(&["*_tmp"])).unwrap();
        assert_eq!(got, ["audit_a", "users"]);
        assert_eq!(
            select(&all, &[], &names(&["audit_*"])).unwrap(),
            ["orders", "users"]
        );
    }

    #[test]
    fn a_pattern_matching_nothing_is_an_error_listing_the_tables() {
        let all = names(&["orders"]);
        let err = select(&all, &names(&["ordrs"]), &[]).unwrap_err();
        assert!(err.contains("\"ordrs\" matches no table"), "{err}");
        assert!(err.contains("orders"), "{err}");
        assert!(select(&all, &names(&["[x"]), &[]).is_err());
    }

    #[test]
    fn literals_are_told_from_globs() {
        assert!(is_literal("orders"));
        assert!(!is_literal("orders_*"));
    }
}
