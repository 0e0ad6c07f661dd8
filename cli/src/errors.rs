//! One-line error messages: the error chain without repeats, and the collection-name
//! suggestions behind "no collection named …".

use tessera::{Collection, Database};

/// The error and its causes on one line, joined by ": ". A cause whose text the message
/// already ends with is left out: the storage errors embed their source in their own text
/// and also return it as `source()`, which would otherwise print every OS error twice.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out.replace(['\n', '\r'], " ")
}

/// `db.collection(name)`, or an error that lists the collections and suggests the closest.
pub fn collection(db: &Database, name: &str) -> anyhow::Result<Collection> {
    match db.collection(name) {
        Ok(c) => Ok(c),
        Err(tessera::Error::CollectionNotFound(_)) => {
            Err(anyhow::anyhow!(missing_collection(db, name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// "no collection named X in DB; did you mean Y? (collections: …)".
pub fn missing_collection(db: &Database, name: &str) -> String {
    let names = db.collection_names();
    let mut msg = format!("no collection named {name:?} in {}", db.path().display());
    if names.is_empty() {
        msg.push_str(" (it has no collections yet)");
        return msg;
    }
    if let Some(best) = closest(name, &names) {
        msg.push_str(&format!("; did you mean {best:?}?"));
    }
    msg.push_str(&format!(" (collections: {})", names.join(", ")));
    msg
}

/// The name within a third of its length in edits of `name` (at least 2), nearest first.
fn closest<'a>(name: &str, names: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    names
        .iter()
        .map(|n| (edit_distance(&name.to_lowercase(), &n.to_lowercase()), n))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n.as_str())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let os = std::io::Error::from_raw_os_error(20);
        let e = anyhow::Error::new(WithSource(os)).context("cannot open DB");
        let line = one_line(&e);
        assert_eq!(line.matches("os error 20").count(), 1, "{line}");
        assert!(
            line.starts_with("cannot open DB: I/O error on x: "),
            "{line}"
        );
    }

    /// Like the storage errors: the source's text inside its own, and the source again.
    #[derive(Debug)]
    struct WithSource(std::io::Error);
    impl std::fmt::Display for WithSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "I/O error on x: {}", self.0)
        }
    }
    impl std::error::Error for WithSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_closest_name_is_suggested_only_when_close() {
        let names = vec!["passages".to_owned(), "images".to_owned()];
        assert_eq!(closest("pasages", &names), Some("passages"));
        assert_eq!(closest("Images", &names), Some("images"));
        assert_eq!(closest("zzzzzzzz", &names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
