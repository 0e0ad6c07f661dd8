//! The command line's side of issue 14: `rerank`, `explain`, and the diversity settings of
//! `search`. The engine does the scoring; this resolves ids and queries and prints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tessera::{Collection, Diversity, Explanation, ExternalId};

use crate::args::{QuerySource, SearchOpts};
use crate::commands::{f32_value, like_query, resolve_id};
use crate::doclabels::doc_labels;
use crate::query::{Query, read_queries};
use crate::render::{Printer, ResultSet};
use crate::text::{self, Model, ModelChoice};

/// The diversity a search asks for: any of `--diverse`, `--max-query-similarity` and
/// `--max-kept-similarity`; a threshold not given is RA-CM3's 0.9.
pub fn diversity(o: &SearchOpts) -> Option<Diversity> {
    if !o.diverse && o.max_query_similarity.is_none() && o.max_kept_similarity.is_none() {
        return None;
    }
    let d = Diversity::default();
    Some(Diversity::new(
        o.max_query_similarity.unwrap_or(d.max_query_similarity),
        o.max_kept_similarity.unwrap_or(d.max_kept_similarity),
    ))
}

/// Applies the shell's `.diversity` setting to a search that gave no diversity flag.
pub fn default_diversity(o: &mut SearchOpts, setting: Option<Diversity>) {
    if let Some(d) = setting
        && diversity(o).is_none()
    {
        o.max_query_similarity = Some(d.max_query_similarity);
        o.max_kept_similarity = Some(d.max_kept_similarity);
    }
}

/// `.diversity`'s arguments: `off`, `on` (0.9 and 0.9), or two thresholds.
pub fn parse_diversity_setting(values: &[String]) -> Result<Option<Diversity>> {
    let threshold =
        |v: &str| crate::args::similarity(v).map_err(|e| anyhow::anyhow!("diversity: {e}"));
    match values {
        [v] if v == "off" => Ok(None),
        [v] if v == "on" => Ok(Some(Diversity::default())),
        [q, k] => Ok(Some(Diversity::new(threshold(q)?, threshold(k)?))),
        _ => bail!("diversity: give off, on, or two thresholds (query, kept) from -1 to 1"),
    }
}

/// How `.show` and `.diversity` describe the setting.
pub fn diversity_setting(d: Option<Diversity>) -> String {
    match d {
        None => "off".into(),
        Some(d) => format!(
            "skip candidates above {} normalised MaxSim to the query or {} to a kept result",
            d.max_query_similarity, d.max_kept_similarity
        ),
    }
}

/// The ids of `--ids` and `--ids-file` (one per line; blank lines skipped).
pub fn read_ids(ids: &[String], file: Option<&Path>) -> Result<Vec<String>> {
    let mut out: Vec<String> = ids
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("{}: cannot read the id list", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(out)
}

/// A query with a label per token: its wordpiece for text queries, else its position.
pub struct LabelledQuery {
    /// The query.
    pub query: Query,
    /// One label per query token.
    pub token_labels: Vec<String>,
    /// The model that encoded a text query: it labels the document tokens of `explain` too.
    pub model: Option<Arc<Model>>,
}

/// Loads the model for `--text` queries of a collection (`Some(dir)`: that one).
pub type ModelLoader<'a> = dyn FnMut(&Collection, Option<&Path>) -> Result<Arc<Model>> + 'a;

/// The binary's model loader: the given directory, else the collection's recorded model.
pub fn load_model(coll: &Collection, given: Option<&Path>) -> Result<Arc<Model>> {
    let choice = match given {
        Some(dir) => ModelChoice::Given(dir),
        None => ModelChoice::Recorded,
    };
    let m = text::resolve_model(choice, Some(coll), 0, 32)?;
    m.check_dim(coll.name(), coll.config().dim)?;
    text::warn_if_other_model(coll, &m)?;
    Ok(Arc::new(m))
}

/// The queries `source` names, each with its token labels.
pub fn queries(
    coll: &Collection,
    source: &QuerySource,
    models: &mut ModelLoader<'_>,
) -> Result<Vec<LabelledQuery>> {
    let dim = coll.config().dim as usize;
    let by_position = |q: Query| {
        let token_labels = (0..q.vectors.len() / dim)
            .map(|i| format!("q{i}"))
            .collect();
        LabelledQuery {
            query: q,
            token_labels,
            model: None,
        }
    };
    if let Some(path) = &source.query {
        return Ok(read_queries(path, dim)?
            .into_iter()
            .map(by_position)
            .collect());
    }
    if let Some(id) = &source.like {
        return Ok(vec![by_position(like_query(coll, id)?)]);
    }
    let Some(t) = &source.text else {
        bail!("give a query: --query FILE, --text \"QUERY\" or --like ID");
    };
    let m = models(coll, source.model.as_deref())?;
    let q = text::text_queries(&m, std::slice::from_ref(t))?.remove(0);
    let ids = m
        .encoder
        .token_ids(&[t.as_str()], tessera_encoder::InputKind::Query)
        .context("cannot tokenize the query text")?
        .remove(0);
    if ids.len() != q.vectors.len() / dim {
        // The encoder gave a vector per input id; if that ever changes, label by position.
        return Ok(vec![LabelledQuery {
            model: Some(m),
            ..by_position(q)
        }]);
    }
    let token_labels = ids
        .iter()
        .map(|&id| m.encoder.token_text(id).unwrap_or_else(|| format!("#{id}")))
        .collect();
    Ok(vec![LabelledQuery {
        query: q,
        token_labels,
        model: Some(m),
    }])
}

/// Reranks `ids` for each query and prints query, rank, id and score per hit; ids not in
/// the collection are listed on stderr. An empty id list prints no rows.
pub fn rerank(
    coll: &Collection,
    queries: &[LabelledQuery],
    ids: &[String],
    k: Option<usize>,
    printer: &mut Printer,
) -> Result<()> {
    let ext: Vec<ExternalId> = ids
        .iter()
        .map(|s| resolve_id(coll, s))
        .collect::<Result<_>>()?;
    let mut rs = ResultSet::new(&[
        ("query", "query"),
        ("rank", "rank"),
        ("id", "id"),
        ("score", "score"),
    ]);
    if ext.is_empty() {
        eprintln!("no ids given: nothing to rerank");
    }
    let mut unknown: Vec<ExternalId> = Vec::new();
    for q in queries {
        let report = coll
            .rerank(&q.query.vectors, &ext, k.unwrap_or(usize::MAX))
            .with_context(|| format!("query {}", q.query.label))?;
        for (rank, h) in report.hits.iter().enumerate() {
            rs.push(vec![
                q.query.label.clone(),
                json!(rank + 1),
                serde_json::to_value(&h.id)?,
                f32_value(h.score),
            ]);
        }
        unknown = report.unknown;
    }
    printer.print(&rs)?;
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        eprintln!(
            "not in collection {:?} (not scored): {}",
            coll.name(),
            names.join(", ")
        );
    }
    Ok(())
}

/// Explains document `id` for the one query in `queries`: prints one row per query token
/// (its label, the best document token's position and label, the similarity) and the
/// total on stderr; with `plot`, writes the heatmap there. Document tokens are labelled
/// with their wordpieces when the query was text (module `doclabels`), else by position.
pub fn explain(
    coll: &Collection,
    queries: Vec<LabelledQuery>,
    id: &str,
    plot: Option<&PathBuf>,
    printer: &mut Printer,
) -> Result<Explanation> {
    let n = queries.len();
    let Some(q) = queries.into_iter().next().filter(|_| n == 1) else {
        bail!("explain takes one query; the query file holds {n}");
    };
    let ext = resolve_id(coll, id)?;
    let e = coll
        .explain(&q.query.vectors, &ext)?
        .with_context(|| format!("collection {:?} has no document with id {id}", coll.name()))?;
    let doc = doc_labels(coll, q.model.as_deref(), &ext, e.doc_tokens);
    if let Some(note) = &doc.note {
        eprintln!("{note}");
    }
    let mut rs = ResultSet::new(&[
        ("query_token", "query token"),
        ("token", "token"),
        ("doc_token", "document token"),
        ("doc_label", "doc label"),
        ("similarity", "similarity"),
    ]);
    for m in &e.matches {
        rs.push(vec![
            json!(m.query_token),
            Value::from(q.token_labels[m.query_token].as_str()),
            json!(m.doc_token),
            Value::from(doc.labels[m.doc_token].as_str()),
            f32_value(m.similarity),
        ]);
    }
    printer.print(&rs)?;
    eprintln!(
        "document {}: MaxSim {} = the sum of {} query tokens' best matches among {} document tokens ({})",
        e.id,
        e.score,
        e.matches.len(),
        e.doc_tokens,
        if e.full_precision {
            "original vectors, the score search and rerank give"
        } else {
            "vectors decompressed from the codes: no originals kept"
        }
    );
    if let Some(path) = plot {
        let title = format!(
            "{:?} x document {} in {:?}: MaxSim {:.4}",
            q.query
                .label
                .as_str()
                .map_or(q.query.label.to_string(), str::to_owned),
            e.id,
            coll.name(),
            e.score
        );
        crate::heatmap::write_svg(path, &title, &e, &q.token_labels, &doc.labels)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(e)
}
