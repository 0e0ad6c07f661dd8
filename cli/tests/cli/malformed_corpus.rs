//! A corpus of malformed inputs (issue 15, "Malformed input corpus"): over a hundred broken
//! `.npy`, `.safetensors` and JSON-lines inputs, generated here byte by byte, each given to
//! `tessera ingest` under a 4 GiB address-space limit. Each must be refused with exit code 1
//! and one line naming the file (and, for JSON lines, the line), without a crash, within
//! the memory limit (declared sizes of terabytes included), and the collection must be
//! unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const DIM: usize = 8;
const GOOD: u64 = 5;
/// Address-space limit for each ingest, in KiB: far below any terabyte-sized allocation,
/// far above what a correct refusal needs.
const LIMIT_KIB: u64 = 4 << 20;

/// An `.npy` file: version 1.0 header with `descr`, `fortran_order` and `shape` (Python
/// syntax), padded to 64 bytes, then `data`.
fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let f = if fortran { "True" } else { "False" };
    npy_header(
        &format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}"),
        data,
    )
}

fn npy_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_owned();
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Rows of a valid 3-document flat matrix: 2 + 3 + 1 tokens of `DIM` values.
fn flat_values() -> Vec<f32> {
    (0..6 * DIM)
        .map(|i| ((i % 13) as f32 - 6.0) / 8.0)
        .collect()
}

/// A `.safetensors` file with header `json` and `data`.
fn st(json: impl AsRef<[u8]>, data: &[u8]) -> Vec<u8> {
    let json = json.as_ref();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json);
    out.extend_from_slice(data);
    out
}

fn st_tensor(name: &str, dtype: &str, shape: &str, start: usize, end: usize) -> String {
    format!(
        r#""{name}": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": [{start}, {end}]}}"#
    )
}

fn row(values: &[f32]) -> String {
    let v: Vec<String> = values.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", v.join(", "))
}

fn good_line(id: &str) -> String {
    format!(
        r#"{{"id": "{id}", "embeddings": [{}, {}]}}"#,
        row(&[0.25; DIM]),
        row(&[-0.5; DIM])
    )
}

/// One malformed input: files to write (name, bytes), the `ingest` arguments after the
/// collection (file names resolved in the case's directory), and what stderr must name
/// besides the first file.
struct Case {
    name: String,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
    needle: Option<String>,
}

fn case(name: &str, files: Vec<(&str, Vec<u8>)>, args: &[&str], needle: Option<&str>) -> Case {
    Case {
        name: name.to_owned(),
        files: files.into_iter().map(|(n, b)| (n.to_owned(), b)).collect(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        needle: needle.map(str::to_owned),
    }
}

fn npy_cases() -> Vec<Case> {
    let good = f32s(&flat_values());
    let lens = npy("<i8", false, "(3,)", &i64s(&[2, 3, 1]));
    let flat = |name: &str, bytes: Vec<u8>| {
        case(
            name,
            vec![("flat.npy", bytes), ("lens.npy", lens.clone())],
            &["flat.npy", "--doclens", "lens.npy"],
            None,
        )
    };
    let mut with_nan = flat_values();
    with_nan[3 * DIM + 2] = f32::NAN;
    let mut with_inf = flat_values();
    with_inf[5 * DIM] = f32::INFINITY;
    let mut with_neg_inf = flat_values();
    with_neg_inf[0] = f32::NEG_INFINITY;
    let mut with_big = flat_values();
    with_big[7] = 1e30;
    let mut cases = vec![
        flat("empty file", Vec::new()),
        flat("magic only", b"\x93NUMPY".to_vec()),
        flat("wrong magic", {
            let mut b = npy("<f4", false, "(6, 8)", &good);
            b[1] = b'X';
            b
        }),
        flat("unknown version", {
            let mut b = npy("<f4", false, "(6, 8)", &good);
            b[6] = 9;
            b
        }),
        flat("header length beyond the file", {
            let mut b = npy("<f4", false, "(6, 8)", &good);
            b[8] = 0xff;
            b[9] = 0xff;
            b.truncate(200);
            b
        }),
        flat("header not a dict", npy_header("[1, 2, 3]", &good)),
        flat(
            "header without descr",
            npy_header("{'fortran_order': False, 'shape': (6, 8), }", &good),
        ),
        flat(
            "header without shape",
            npy_header("{'descr': '<f4', 'fortran_order': False, }", &good),
        ),
        flat(
            "header of invalid syntax",
            npy_header("{'descr': '<f4', 'shape': (6, 8", &good),
        ),
        flat("header invalid UTF-8", {
            let mut b = npy("<f4", false, "(6, 8)", &good);
            b[12] = 0xff;
            b
        }),
        flat("int32 dtype", npy("<i4", false, "(6, 8)", &good)),
        flat("bool dtype", npy("|b1", false, "(6, 8)", &[0u8; 48])),
        flat(
            "complex dtype",
            npy(
                "<c8",
                false,
                "(6, 8)",
                &[good.clone(), good.clone()].concat(),
            ),
        ),
        flat(
            "structured dtype",
            npy_header(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6, 8), }",
                &good,
            ),
        ),
        flat(
            "string dtype",
            npy(
                "<U4",
                false,
                "(6, 8)",
                &[good.clone(), good.clone(), good.clone(), good.clone()].concat(),
            ),
        ),
        flat("1-D shape", npy("<f4", false, "(48,)", &good)),
        flat("3-D shape", npy("<f4", false, "(3, 2, 8)", &good)),
        flat("0-D shape", npy("<f4", false, "()", &good[..4])),
        flat("wrong dimension", npy("<f4", false, "(8, 6)", &good)),
        flat("zero columns", npy("<f4", false, "(6, 0)", &[])),
        flat("zero rows", npy("<f4", false, "(0, 8)", &[])),
        flat(
            "data one byte short",
            npy("<f4", false, "(6, 8)", &good[..good.len() - 1]),
        ),
        flat(
            "data one row short",
            npy("<f4", false, "(6, 8)", &good[..good.len() - 4 * DIM]),
        ),
        flat(
            "trailing garbage",
            npy(
                "<f4",
                false,
                "(6, 8)",
                &[good.clone(), vec![1, 2, 3]].concat(),
            ),
        ),
        flat(
            "terabytes declared",
            npy("<f4", false, "(1000000000000, 8)", &good),
        ),
        // The element count wraps to 0 in 64 bits: once read as an empty matrix.
        case(
            "shape overflowing 64 bits",
            vec![
                (
                    "flat.npy",
                    npy("<f4", false, "(4611686018427387904, 8)", &good),
                ),
                ("lens.npy", lens.clone()),
            ],
            &["flat.npy", "--doclens", "lens.npy"],
            Some("more than 2^64 bytes"),
        ),
        case(
            "shape overflowing to nothing",
            vec![
                (
                    "flat.npy",
                    npy("<f4", false, "(4611686018427387904, 8)", &[]),
                ),
                ("lens.npy", lens.clone()),
            ],
            &["flat.npy", "--doclens", "lens.npy"],
            Some("more than 2^64 bytes"),
        ),
        flat("negative shape", npy("<f4", false, "(-6, 8)", &good)),
        flat("NaN", npy("<f4", false, "(6, 8)", &f32s(&with_nan))),
        flat("infinity", npy("<f4", false, "(6, 8)", &f32s(&with_inf))),
        flat(
            "negative infinity",
            npy("<f4", false, "(6, 8)", &f32s(&with_neg_inf)),
        ),
        flat(
            "beyond f16 originals",
            npy("<f4", false, "(6, 8)", &f32s(&with_big)),
        ),
        flat("float64 NaN", {
            let v: Vec<u8> = flat_values()
                .iter()
                .enumerate()
                .flat_map(|(i, &x)| (if i == 9 { f64::NAN } else { f64::from(x) }).to_le_bytes())
                .collect();
            npy("<f8", false, "(6, 8)", &v)
        }),
        flat("float64 beyond f32", {
            let v: Vec<u8> = flat_values()
                .iter()
                .enumerate()
                .flat_map(|(i, &x)| (if i == 9 { 1e300 } else { f64::from(x) }).to_le_bytes())
                .collect();
            npy("<f8", false, "(6, 8)", &v)
        }),
    ];
    let flat_ok = npy("<f4", false, "(6, 8)", &good);
    let with_lens = |name: &str, lens: Vec<u8>| {
        case(
            name,
            vec![("flat.npy", flat_ok.clone()), ("lens.npy", lens)],
            &["flat.npy", "--doclens", "lens.npy"],
            Some("lens.npy"),
        )
    };
    cases.extend([
        with_lens(
            "doclens summing past the rows",
            npy("<i8", false, "(3,)", &i64s(&[2, 3, 2])),
        ),
        with_lens(
            "doclens summing short of the rows",
            npy("<i8", false, "(3,)", &i64s(&[2, 3, 0])),
        ),
        with_lens(
            "a zero doclen",
            npy("<i8", false, "(4,)", &i64s(&[2, 0, 3, 1])),
        ),
        with_lens(
            "a negative doclen",
            npy("<i8", false, "(3,)", &i64s(&[2, -3, 7])),
        ),
        with_lens(
            "float doclens",
            npy("<f4", false, "(3,)", &f32s(&[2.0, 3.0, 1.0])),
        ),
        with_lens(
            "2-D doclens",
            npy("<i8", false, "(3, 1)", &i64s(&[2, 3, 1])),
        ),
        with_lens(
            "terabytes of doclens",
            npy("<i8", false, "(1000000000000,)", &i64s(&[2, 3, 1])),
        ),
        with_lens(
            "a huge doclen",
            npy("<i8", false, "(2,)", &i64s(&[i64::MAX, 1])),
        ),
        with_lens(
            "doclens overflowing their sum",
            npy("<u8", false, "(3,)", &i64s(&[-1, -1, 6])),
        ),
        with_lens(
            "truncated doclens",
            npy("<i8", false, "(3,)", &i64s(&[2, 3])[..12]),
        ),
        with_lens("empty doclens", npy("<i8", false, "(0,)", &[])),
    ]);
    let ids = |name: &str, text: &[u8]| {
        case(
            name,
            vec![
                ("flat.npy", flat_ok.clone()),
                ("lens.npy", lens.clone()),
                ("ids.txt", text.to_vec()),
            ],
            &["flat.npy", "--doclens", "lens.npy", "--ids", "ids.txt"],
            Some("ids.txt"),
        )
    };
    cases.extend([
        ids("too few ids", b"a\nb\n"),
        ids("too many ids", b"a\nb\nc\nd\n"),
        ids("an empty id", b"a\n\nc\n"),
        ids("a duplicate id", b"a\nb\na\n"),
        ids("invalid UTF-8 id", b"a\n\xff\xfe\nc\n"),
        case(
            "an id already stored",
            vec![
                ("flat.npy", flat_ok.clone()),
                ("lens.npy", lens.clone()),
                ("ids.txt", b"a\ngood-1\nc\n".to_vec()),
            ],
            &["flat.npy", "--doclens", "lens.npy", "--ids", "ids.txt"],
            Some("good-1"),
        ),
    ]);
    // A directory of one .npy per document.
    let doc = |name: &str, bad: Vec<u8>| {
        case(
            name,
            vec![
                ("docs/a.npy", npy("<f4", false, "(2, 8)", &good[..64])),
                ("docs/b.npy", bad),
            ],
            &["docs"],
            Some("b.npy"),
        )
    };
    cases.extend([
        doc(
            "a truncated document file",
            npy("<f4", false, "(2, 8)", &good[..60]),
        ),
        doc(
            "a document of the wrong dimension",
            npy("<f4", false, "(2, 7)", &good[..56]),
        ),
        doc(
            "a document with NaN",
            npy("<f4", false, "(6, 8)", &f32s(&with_nan)),
        ),
        doc("an empty document file", Vec::new()),
        doc("a document of zero rows", npy("<f4", false, "(0, 8)", &[])),
        doc(
            "a document declaring terabytes",
            npy("<f4", false, "(1000000000000, 8)", &good),
        ),
        doc("a document with more rows than the limit", {
            let rows = 65_537;
            npy(
                "<f2",
                false,
                &format!("({rows}, 8)"),
                &vec![0x3c; rows * 8 * 2],
            )
        }),
    ]);
    cases
}

fn safetensors_cases() -> Vec<Case> {
    let good = f32s(&flat_values());
    let file = |name: &str, bytes: Vec<u8>| {
        case(
            name,
            vec![("x.safetensors", bytes)],
            &["x.safetensors"],
            None,
        )
    };
    let one = |dtype: &str, shape: &str, data: &[u8]| {
        st(
            format!("{{{}}}", st_tensor("d", dtype, shape, 0, data.len())),
            data,
        )
    };
    let mut with_nan = flat_values();
    with_nan[11] = f32::NAN;
    let bf16_inf: Vec<u8> = (0..16)
        .flat_map(|i| if i == 4 { [0x80u8, 0x7f] } else { [0x80, 0x3f] })
        .collect();
    let f16_nan: Vec<u8> = (0..16)
        .flat_map(|i| if i == 4 { [0x00u8, 0x7e] } else { [0x00, 0x3c] })
        .collect();
    vec![
        file("empty file", Vec::new()),
        file("shorter than its length field", vec![1, 0, 0]),
        file(
            "header length of a terabyte",
            st("{}", &[])
                .iter()
                .copied()
                .enumerate()
                .map(|(i, b)| if i == 5 { 1 } else { b })
                .collect(),
        ),
        file("header length beyond the file", {
            let mut b = one("F32", "[6, 8]", &good);
            b[0] = 0xff;
            b[1] = 0xff;
            b
        }),
        file("header not JSON", st("{not json", &good)),
        file("header a JSON array", st("[1, 2]", &good)),
        file("header invalid UTF-8", st(b"{\"d\xff\": 1}", &good)),
        file("no tensors", st("{}", &[])),
        file("int32 tensor", one("I32", "[6, 8]", &good)),
        file("bool tensor", one("BOOL", "[6, 8]", &good[..48])),
        file("unknown dtype", one("F7", "[6, 8]", &good)),
        file(
            "shape disagreeing with the offsets",
            st(
                format!("{{{}}}", st_tensor("d", "F32", "[6, 8]", 0, 100)),
                &good,
            ),
        ),
        file(
            "offsets beyond the data",
            st(
                format!("{{{}}}", st_tensor("d", "F32", "[6, 8]", 0, 192)),
                &good[..100],
            ),
        ),
        file(
            "offsets reversed",
            st(
                format!("{{{}}}", st_tensor("d", "F32", "[6, 8]", 192, 0)),
                &good,
            ),
        ),
        file(
            "overlapping tensors",
            st(
                format!(
                    "{{{}, {}}}",
                    st_tensor("a", "F32", "[6, 8]", 0, 192),
                    st_tensor("b", "F32", "[6, 8]", 0, 192)
                ),
                &good,
            ),
        ),
        file(
            "terabytes declared",
            st(
                format!(
                    "{{{}}}",
                    st_tensor("d", "F32", "[1000000000000, 8]", 0, 32_000_000_000_000)
                ),
                &good,
            ),
        ),
        file(
            "shape overflowing 64 bits",
            st(
                format!(
                    "{{{}}}",
                    st_tensor("d", "F32", "[4611686018427387904, 8]", 0, 0)
                ),
                &[],
            ),
        ),
        file("1-D tensor", one("F32", "[48]", &good)),
        file("3-D tensor", one("F32", "[3, 2, 8]", &good)),
        file("wrong dimension", one("F32", "[8, 6]", &good)),
        file("zero rows", one("F32", "[0, 8]", &[])),
        file("NaN", one("F32", "[6, 8]", &f32s(&with_nan))),
        file("bf16 infinity", one("BF16", "[2, 8]", &bf16_inf)),
        file("f16 NaN", one("F16", "[2, 8]", &f16_nan)),
        file("truncated data", {
            let mut b = one("F32", "[6, 8]", &good);
            b.truncate(b.len() - 7);
            b
        }),
        file("trailing garbage", {
            let mut b = one("F32", "[6, 8]", &good);
            b.extend_from_slice(&[9; 5]);
            b
        }),
        file("flat with doclens not adding up", {
            let lens = i64s(&[2, 3, 2]);
            st(
                format!(
                    "{{{}, {}}}",
                    st_tensor("embeddings", "F32", "[6, 8]", 0, 192),
                    st_tensor("doclens", "I64", "[3]", 192, 216)
                ),
                &[good.clone(), lens].concat(),
            )
        }),
        file("flat with a negative doclen", {
            let lens = i64s(&[2, -1, 5]);
            st(
                format!(
                    "{{{}, {}}}",
                    st_tensor("embeddings", "F32", "[6, 8]", 0, 192),
                    st_tensor("doclens", "I64", "[3]", 192, 216)
                ),
                &[good.clone(), lens].concat(),
            )
        }),
        file(
            "metadata not strings",
            st(
                format!(
                    "{{\"__metadata__\": {{\"a\": 1}}, {}}}",
                    st_tensor("d", "F32", "[6, 8]", 0, 192)
                ),
                &good,
            ),
        ),
    ]
}

fn jsonl_cases() -> Vec<Case> {
    let file = |name: &str, lines: &[String], bad_line: usize| {
        let text = lines.join("\n") + "\n";
        let needle = format!("line {bad_line}");
        Case {
            name: name.to_owned(),
            files: vec![("x.jsonl".to_owned(), text.into_bytes())],
            args: vec!["x.jsonl".to_owned()],
            needle: Some(needle),
        }
    };
    let ok1 = good_line("j1");
    let ok2 = good_line("j2");
    let with = |bad: &str| vec![ok1.clone(), ok2.clone(), bad.to_owned()];
    let r = row(&[0.25; DIM]);
    let deep = format!(
        r#"{{"id": "deep", "embeddings": {}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_meta = format!(
        r#"{{"id": "deep", "embeddings": [{r}], "metadata": {}1{}}}"#,
        r#"{"a": "#.repeat(50_000),
        "}".repeat(50_000)
    );
    let mut cases = vec![
        file("not JSON", &with("this is not json"), 3),
        file(
            "cut off mid-document",
            &with(&format!(r#"{{"id": "c", "embeddings": [{r}"#)),
            3,
        ),
        file(
            "a JSON array instead of an object",
            &with(&format!("[{r}]")),
            3,
        ),
        file("a JSON string", &with(r#""just a string""#), 3),
        file("no id", &with(&format!(r#"{{"embeddings": [{r}]}}"#)), 3),
        file("no embeddings", &with(r#"{"id": "n"}"#), 3),
        file(
            "an empty string id",
            &with(&format!(r#"{{"id": "", "embeddings": [{r}]}}"#)),
            3,
        ),
        file(
            "a null id",
            &with(&format!(r#"{{"id": null, "embeddings": [{r}]}}"#)),
            3,
        ),
        file(
            "a fractional id",
            &with(&format!(r#"{{"id": 1.5, "embeddings": [{r}]}}"#)),
            3,
        ),
        file(
            "a negative id",
            &with(&format!(r#"{{"id": -4, "embeddings": [{r}]}}"#)),
            3,
        ),
        file(
            "an object id",
            &with(&format!(r#"{{"id": {{"a": 1}}, "embeddings": [{r}]}}"#)),
            3,
        ),
        file(
            "an id beyond u64",
            &with(&format!(
                r#"{{"id": 18446744073709551616, "embeddings": [{r}]}}"#
            )),
            3,
        ),
        file("a duplicate id", &with(&good_line("j1")), 3),
        file("an id already stored", &with(&good_line("good-2")), 3),
        file(
            "embeddings not an array",
            &with(r#"{"id": "e", "embeddings": "vectors"}"#),
            3,
        ),
        file(
            "no token rows",
            &with(r#"{"id": "e", "embeddings": []}"#),
            3,
        ),
        file(
            "an empty row",
            &with(r#"{"id": "e", "embeddings": [[]]}"#),
            3,
        ),
        file(
            "a flat row instead of rows",
            &with(&format!(r#"{{"id": "e", "embeddings": {r}}}"#)),
            3,
        ),
        file(
            "rows of different lengths",
            &with(&format!(r#"{{"id": "e", "embeddings": [{r}, [0.5]]}}"#)),
            3,
        ),
        file(
            "the wrong dimension",
            &with(&format!(
                r#"{{"id": "e", "embeddings": [{}]}}"#,
                row(&[0.5; DIM + 1])
            )),
            3,
        ),
        file(
            "a string among the numbers",
            &with(r#"{"id": "e", "embeddings": [[0.1, "x", 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file(
            "a null among the numbers",
            &with(r#"{"id": "e", "embeddings": [[0.1, null, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file(
            "a boolean among the numbers",
            &with(r#"{"id": "e", "embeddings": [[0.1, true, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file(
            "a NaN literal",
            &with(r#"{"id": "e", "embeddings": [[0.1, NaN, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file(
            "a number overflowing to infinity",
            &with(r#"{"id": "e", "embeddings": [[0.1, 1e999, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file(
            "a number beyond f16 originals",
            &with(r#"{"id": "e", "embeddings": [[0.1, 1e6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#),
            3,
        ),
        file("embeddings nested 100,000 deep", &with(&deep), 3),
        file("metadata nested 50,000 deep", &with(&deep_meta), 3),
        file(
            "an error on the first line",
            &[r#"{"id": 1, "embeddings": 5}"#.to_owned(), ok1.clone()],
            1,
        ),
    ];
    // Byte-level damage.
    let mut bytes = (with(&good_line("u")).join("\n") + "\n").into_bytes();
    let at = bytes.len() - 10;
    bytes[at] = 0xff;
    cases.push(Case {
        name: "invalid UTF-8".into(),
        files: vec![("x.jsonl".into(), bytes)],
        args: vec!["x.jsonl".into()],
        needle: Some("line 3".into()),
    });
    let mut nul = (with(&good_line("z")).join("\n") + "\n").into_bytes();
    let at = nul.len() - 20;
    nul[at] = 0;
    cases.push(Case {
        name: "a NUL byte".into(),
        files: vec![("x.jsonl".into(), nul)],
        args: vec!["x.jsonl".into()],
        needle: Some("line 3".into()),
    });
    cases
}

fn run_limited(args: &[String]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env(
            "TESSERA_HISTORY",
            std::env::temp_dir().join("tessera-test-history"),
        )
        .output()
        .expect("sh runs")
}

#[test]
fn over_a_hundred_malformed_inputs_are_each_refused_naming_the_file_with_nothing_committed() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", DIM);
    let good: String = (0..GOOD)
        .map(|i| good_line(&format!("good-{i}")) + "\n")
        .collect();
    std::fs::write(t.p("good.jsonl"), good).expect("write");
    // The limit leaves room for a real ingest.
    let o = run_limited(&[
        "ingest".into(),
        s(&db).into(),
        "c".into(),
        s(&t.p("good.jsonl")).into(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let cases: Vec<Case> = npy_cases()
        .into_iter()
        .chain(safetensors_cases())
        .chain(jsonl_cases())
        .collect();
    assert!(cases.len() >= 100, "{} inputs", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let dir: PathBuf = t.p(&format!("case-{i}"));
        for (name, bytes) in &c.files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, bytes).expect("write");
        }
        let resolve = |a: &String| {
            if c.files
                .iter()
                .any(|(n, _)| n == a || n.starts_with(&format!("{a}/")))
            {
                dir.join(a).to_string_lossy().into_owned()
            } else {
                a.clone()
            }
        };
        let mut args: Vec<String> = vec!["ingest".into(), s(&db).into(), "c".into()];
        args.extend(c.args.iter().map(resolve));
        let o = run_limited(&args);
        let err = stderr(&o);
        let what = format!(
            "case {i} ({}): {:?}: {}",
            c.name,
            o.status.code(),
            err.trim()
        );
        let named = c.files.iter().any(|(n, _)| {
            let file = Path::new(n).file_name().expect("name").to_string_lossy();
            err.contains(&*file)
        });
        if o.status.code() != Some(1)
            || err.trim().lines().count() != 1
            || err.contains("panicked")
            || !named
            || c.needle.as_ref().is_some_and(|n| !err.contains(n.as_str()))
        {
            failures.push(what);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs not refused as they should be:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(documents(&db, "c"), GOOD, "the collection changed");
    eprintln!("{} malformed inputs refused", cases.len());
}

/// A file whose first line starts a document and never ends: `head`, then zeros up to
/// 8 GiB (sparse, so it costs no disk). Read whole, its line could not fit in the address
/// space each ingest runs under.
pub(crate) fn endless_line(path: &Path, head: &str) {
    let mut f = std::fs::File::create(path).expect("create");
    std::io::Write::write_all(&mut f, head.as_bytes()).expect("write");
    f.set_len(8 << 30).expect("set_len");
}

/// Runs `tessera` with `args` under the address-space limit and checks that it refuses
/// `path`'s first line for its length, in one line, without a panic.
pub(crate) fn refuses_the_endless_line(args: &[&str], path: &Path) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let o = run_limited(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&format!("{}: line 1", s(path))),
        "not naming the file and line: {err}"
    );
    assert!(err.contains("longer than 256 MiB"), "{err}");
}

#[test]
fn json_lines_and_side_files_that_never_end_are_refused_within_the_memory_limit() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", DIM);
    let path = t.p("endless.jsonl");
    endless_line(&path, "{\"id\": \"a\", \"embeddings\": [[0.5, ");
    refuses_the_endless_line(&["ingest", s(&db), "c", s(&path)], &path);
    assert_eq!(documents(&db, "c"), 0, "the collection changed");
    // `--create` reads the first line for the dimension: bounded the same way, and no
    // collection is created.
    refuses_the_endless_line(&["ingest", s(&db), "fresh", s(&path), "--create"], &path);
    let names = ok(&["info", s(&db), "--json"]);
    assert_eq!(json_lines(&names).len(), 1, "{names}");
    // The side files of a flat `.npy`: an ids file read line by line with the same bound,
    // and a JSON doclens list parsed from the stream (its zeros are refused at once).
    let flat = t.p("flat.npy");
    std::fs::write(
        &flat,
        npy("<f4", false, &format!("(6, {DIM})"), &f32s(&flat_values())),
    )
    .expect("write");
    let lens = t.p("lens.npy");
    std::fs::write(&lens, npy("<i8", false, "(3,)", &i64s(&[2, 3, 1]))).expect("write");
    let ids = t.p("endless-ids.txt");
    endless_line(&ids, "a\nb\nc");
    let args = [
        "ingest",
        s(&db),
        "c",
        s(&flat),
        "--doclens",
        s(&lens),
        "--ids",
        s(&ids),
    ];
    let o = run_limited(&args.map(str::to_owned));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: line 3 is longer than 256 MiB", s(&ids))),
        "{err}"
    );
    let lens_json = t.p("endless-lens.json");
    endless_line(&lens_json, "[2, 3, 1");
    let args = ["ingest", s(&db), "c", s(&flat), "--doclens", s(&lens_json)];
    let o = run_limited(&args.map(str::to_owned));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("endless-lens.json"), "{err}");
    assert_eq!(documents(&db, "c"), 0, "the collection changed");
}
