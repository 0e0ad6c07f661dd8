//! The device pipeline emulated on the host, stage by stage with the kernels' rules
//! (`tessera_kernels` `cuda/search.cu`: which documents each selection keeps and how it
//! breaks ties), feeding the host's real finishing code (`finish`), and compared with the
//! CPU search. The kernels' arithmetic is checked bit for bit against the CPU functions in
//! `tessera_kernels` (`gpu/transcribed.rs`), so the emulation takes those numbers from the
//! CPU functions; what this checks is the pipeline's structure: candidates, the postings
//! estimate, both cuts and their tie orders, the survivor order, the early stop, the
//! filters and deletes. No GPU runs here.

use super::*;
use crate::search::{SearchStats, decompress_doc};
use tessera_kernels::{CentroidScores8, Int8Query, maxsim_many, padded_tokens};
use tessera_storage::segment::Codes;

/// The query's tables as the device computes them (the CPU's functions; same bits).
struct Tables {
    s: Vec<f32>,
    stride: usize,
    bytes: CentroidScores8,
}

fn tables(codec: &Codec, q: &[f32]) -> Tables {
    let dim = codec.dim();
    let nq = q.len() / dim;
    let stride = padded_tokens(nq);
    let mut s = vec![0f32; codec.n_centroids() as usize * stride];
    let mut bytes = CentroidScores8::default();
    if let Some(c8) = codec.int8_centroids() {
        c8.scores_and_bytes(&Int8Query::new(q, dim), &mut s, &mut bytes);
    } else {
        let mut padded = q.to_vec();
        padded.resize(stride * dim, 0.0);
        tessera_kernels::matmul_nt(codec.centroids(), &padded, dim, &mut s, 1);
        bytes = CentroidScores8::new(&s, stride, nq);
    }
    Tables { s, stride, bytes }
}

fn codes_of(snap: &SnapshotInner, seg: u32, local: u32) -> Vec<u32> {
    let r = &snap.segments[seg as usize].reader;
    let off = r.doc_offsets();
    let (lo, hi) = (
        off[local as usize] as usize,
        off[local as usize + 1] as usize,
    );
    match r.codes() {
        Codes::U16(c) => c[lo..hi].iter().map(|&x| u32::from(x)).collect(),
        Codes::U32(c) => c[lo..hi].to_vec(),
    }
}

/// `lut_maxsim` or `rerank_maxsim_d*` for one document.
fn exact(
    snap: &SnapshotInner,
    codec: &Codec,
    t: &Tables,
    q: &[f32],
    lut: bool,
    d: (u32, u32),
) -> f32 {
    let r = &snap.segments[d.0 as usize].reader;
    if lut {
        let off = r.doc_offsets();
        let (lo, hi) = (off[d.1 as usize] as usize, off[d.1 as usize + 1] as usize);
        let rb = codec.residual_bytes();
        let scales: Option<Vec<half::f16>> = r
            .token_scales()
            .map(|s| s[lo..hi].iter().map(|&b| half::f16::from_bits(b)).collect());
        let packed = &r.residuals()[lo * rb..hi * rb];
        return tessera_kernels::QueryLut::new(codec.residual(), q).maxsim(
            &t.s,
            &codes_of(snap, d.0, d.1),
            packed,
            scales.as_deref(),
        );
    }
    let v = decompress_doc(codec, r, d.1);
    let mut out = [0f32];
    maxsim_many(q, &v, &[0, v.len() / codec.dim()], codec.dim(), &mut out);
    out[0]
}

/// A candidate: ((segment, local id), postings estimate, first-touch key).
type Cand3 = ((u32, u32), f32, u32);

/// The device's answer for one query (`DeviceIndex::search_chunk`, emulated).
fn emulate(
    snap: &SnapshotInner,
    dq: &DeviceQuery<'_>,
    p: &DeviceSearch,
    allowed: Option<&Allowed>,
) -> kg::DeviceRanked {
    let codec = snap.codec.as_deref().expect("codec");
    let q = dq.tokens;
    let t = tables(codec, q);
    let nq = q.len() / codec.dim();
    let kc = codec.n_centroids() as usize;
    let live = |s: usize, l: u32| match allowed {
        Some(a) => a.contains(s, l),
        None => !snap.segments[s].tombstones.contains(l),
    };
    let all: Vec<(u32, u32)> = snap
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, v)| (0..v.reader.meta().n_docs).map(move |l| (s as u32, l)))
        .collect();
    let n = all.len();
    let mut d = kg::DeviceRanked::default();
    let ex = |doc: (u32, u32)| exact(snap, codec, &t, q, dq.lut, doc);
    if p.exhaustive {
        for &doc in all.iter().filter(|&&(s, l)| live(s as usize, l)) {
            let x = ex(doc);
            d.docs.push(doc);
            d.estimates.push(x);
            d.exact.push(x);
        }
        d.candidates = d.docs.len() as u32;
        return d;
    }
    // `limits`.
    let rerank = p.rerank.clamp(1, n.max(1));
    let allowed_count = allowed.map_or(n as u64, |a| a.count) as usize;
    let kept_len = if dq.scan_all {
        allowed_count
    } else {
        p.prefilter.max(rerank)
    }
    .clamp(1, n.max(1));
    let mut cands: Vec<Cand3> = Vec::new();
    if dq.scan_all {
        for &(s, l) in &all {
            if live(s as usize, l) {
                cands.push(((s, l), 0.0, 0));
            }
        }
    } else {
        // select_topk (probes): ties to the lower id; rank_probes: (score desc, id desc).
        let pn = p.nprobe.clamp(1, kc.max(1));
        let mut key = vec![u32::MAX; kc];
        let mut mask = vec![vec![false; nq]; kc];
        let mut floor = vec![0f32; nq];
        for i in 0..nq {
            let col = |c: usize| t.s[c * t.stride + i];
            let mut order: Vec<usize> = (0..kc).collect();
            order.sort_by(|&a, &b| col(b).total_cmp(&col(a)).then(a.cmp(&b)));
            let mut probes = order[..pn].to_vec();
            probes.sort_by(|&a, &b| col(b).total_cmp(&col(a)).then(b.cmp(&a)));
            floor[i] = col(probes[pn - 1]);
            for (rank, &c) in probes.iter().enumerate() {
                mask[c][i] = true;
                key[c] = key[c].min(((i as u32) << 20) | rank.min((1 << 20) - 1) as u32);
            }
        }
        let base = floor.iter().copied().reduce(|a, b| a + b).unwrap_or(0.0);
        for (s, v) in snap.segments.iter().enumerate() {
            let mut hit = vec![false; v.reader.meta().n_docs as usize];
            for c in (0..kc).filter(|&c| mask[c].iter().any(|&m| m)) {
                for &l in v.reader.posting(c as u32) {
                    hit[l as usize] = true;
                }
            }
            for l in (0..hit.len() as u32).filter(|&l| hit[l as usize] && live(s, l)) {
                let codes = codes_of(snap, s as u32, l);
                let touch = codes
                    .iter()
                    .map(|&c| key[c as usize])
                    .min()
                    .unwrap_or(u32::MAX);
                let mut gain: Option<f32> = None;
                for i in 0..nq {
                    let best = codes
                        .iter()
                        .filter(|&&c| mask[c as usize][i])
                        .map(|&c| t.s[c as usize * t.stride + i])
                        .reduce(f32::max);
                    if let Some(b) = best {
                        let g = b - floor[i];
                        gain = Some(gain.map_or(g, |x| x + g));
                    }
                }
                cands.push(((s as u32, l), base + gain.unwrap_or(0.0), touch));
            }
        }
    }
    d.candidates = cands.len() as u32;
    // select_topk (prefilter): ties by (segment, touch, local).
    cands.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then((a.0.0, a.2, a.0.1).cmp(&(b.0.0, b.2, b.0.1)))
    });
    cands.truncate(kept_len);
    d.touch_order = d.candidates as usize <= kept_len;
    let tie = |c: &Cand3| {
        let touch = if d.touch_order { c.2 } else { 0 };
        (c.0.0, touch, c.0.1)
    };
    // code_estimate, select_topk (survivors).
    let mut est: Vec<(f32, Cand3)> = cands
        .iter()
        .map(|c| {
            let codes = codes_of(snap, c.0.0, c.0.1);
            (t.bytes.estimate(&codes), *c)
        })
        .collect();
    est.sort_by(|a, b| b.0.total_cmp(&a.0).then(tie(&a.1).cmp(&tie(&b.1))));
    est.truncate(rerank);
    for (e, c) in est {
        d.docs.push(c.0);
        d.estimates.push(e);
        d.exact.push(ex(c.0));
        d.touch.push(if d.touch_order { c.2 } else { 0 });
    }
    d
}

fn collection(dir: &std::path::Path, dim: u32, nbits: u32) -> crate::Collection {
    use crate::{CollectionConfig, Database, Document, IngestOptions};
    let db = Database::open_or_create(dir).expect("db");
    let coll = db
        .create_collection(
            "c",
            CollectionConfig::new(dim)
                .with_nbits(nbits)
                .with_n_centroids(64),
        )
        .expect("collection");
    let docs = |first: u64, n: u64| -> Vec<Document> {
        (first..first + n)
            .map(|i| {
                // 1-token documents, duplicates (equal estimates: tie orders matter) and a
                // few long ones.
                let rows = match i % 13 {
                    0 => 1,
                    1 => 300,
                    _ => 2 + (i as usize * 7) % 30,
                };
                let src = if i % 11 == 3 { i - 1 } else { i };
                let v = (0..rows * dim as usize)
                    .map(|j| {
                        (((src as usize * 2654435761 + j * 40503) % 1000) as f32 / 500.0) - 1.0
                    })
                    .collect();
                Document::new(i, v).with_metadata(serde_json::json!({ "bucket": i % 10 }))
            })
            .collect()
    };
    coll.ingest(&docs(0, 260), &IngestOptions::default())
        .expect("ingest");
    coll.ingest(&docs(1000, 90), &IngestOptions::default())
        .expect("ingest");
    let dead: Vec<crate::ExternalId> = (0..260u64)
        .step_by(9)
        .chain([1003, 1040])
        .map(Into::into)
        .collect();
    coll.delete(&dead).expect("delete");
    coll
}

#[test]
fn emulated_device_pipeline_gives_the_cpu_search_answers() {
    use crate::{Filter, SearchParams};
    // (prefilter cuts, survivors taken in touch order, decompression path, ties in the
    // code estimate among survivors): each must occur, or the test proves less than it says.
    let mut seen = [0usize; 4];
    for (dim, nbits) in [(32u32, 2u32), (24, 1), (16, 4), (128, 8)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let coll = collection(dir.path(), dim, nbits);
        let snap = coll.snapshot();
        let inner = &snap.inner;
        let codec = inner.codec.as_deref().expect("codec");
        let tenth = Filter::eq("bucket", 3i64);
        let settings = [
            ("default", SearchParams::default()),
            (
                "cuts",
                SearchParams::default()
                    .with_prefilter(40)
                    .with_n_rerank(20)
                    .with_nprobe(3),
            ),
            (
                "rerank cut",
                SearchParams::default().with_n_rerank(20).with_nprobe(4),
            ),
            ("refine off", SearchParams::default().with_n_refine(0)),
            ("nprobe 1", SearchParams::default().with_nprobe(1)),
            ("exhaustive", SearchParams::exhaustive()),
            (
                "exhaustive, refine 5",
                SearchParams::exhaustive().with_n_refine(5),
            ),
            (
                "filter, probes",
                SearchParams::default()
                    .with_filter(tenth.clone())
                    .with_filter_exact(0)
                    .with_filter_scan(0),
            ),
            (
                "filter, all",
                SearchParams::default()
                    .with_filter(tenth.clone())
                    .with_filter_exact(0)
                    .with_filter_scan(usize::MAX),
            ),
        ];
        let queries: Vec<Vec<f32>> = [1usize, 7, 32]
            .iter()
            .enumerate()
            .map(|(s, &rows)| {
                (0..rows * dim as usize)
                    .map(|j| (((s * 7919 + j * 104729) % 997) as f32 / 498.5) - 1.0)
                    .collect()
            })
            .collect();
        for (name, params) in &settings {
            let allowed =
                crate::filter::allowed(inner, params.filter.as_ref(), "c").expect("filter");
            for k in [1usize, 10, 50] {
                let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
                let plan = Plan::new(inner, codec, &refs, k, params, allowed.as_ref());
                for (qi, q) in queries.iter().enumerate() {
                    let what = format!("dim {dim} nbits {nbits} {name} k {k} query {qi}");
                    let dq = plan.queries[qi];
                    let d = emulate(inner, &dq, &plan.device, allowed.as_ref());
                    if !plan.device.exhaustive {
                        seen[0] += usize::from(!d.touch_order);
                        seen[1] += usize::from(d.touch_order && !dq.scan_all);
                        let mut e = d.estimates.clone();
                        e.sort_by(f32::total_cmp);
                        seen[3] += usize::from(e.windows(2).any(|w| w[0] == w[1]));
                    }
                    seen[2] += usize::from(!dq.lut);
                    let (gpu, _) =
                        finish(inner, q, k, params, allowed.as_ref(), &plan, d, 0).expect("finish");
                    let mut stats = SearchStats::default();
                    let cpu =
                        crate::search::search(inner, q, k, params, allowed.as_ref(), &mut stats)
                            .expect("cpu");
                    if dq.lut {
                        // Every number before the refine stage has the CPU's bits.
                        assert_eq!(gpu, cpu, "{what}");
                    } else {
                        assert_eq!(gpu.len(), cpu.len(), "{what}");
                        for (g, c) in gpu.iter().zip(&cpu) {
                            assert!(
                                (g.score - c.score).abs() <= 1e-5 * c.score.abs().max(1.0),
                                "{what}: {g:?} vs {c:?}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "cases not exercised: {seen:?}");
}
