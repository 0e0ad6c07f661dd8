#!/usr/bin/env python3
"""Split Debian's python3.11-doc HTML into passages, with queries and relevance judgments
derived from the documents' section structure (standard library only; no network).

Usage: python_doc_corpus.py HTML_ROOT OUT_DIR [--max-words N] [--queries N] [--max-passages N]

Derivation (documented in BENCHMARKS.md, "The python-doc corpus"):
* pages: the .html files under tutorial/, faq/, howto/, reference/ and library/, in that
  order and sorted within each; whole pages are taken until --max-passages (default 8000)
  passages are reached, so the tail of library/ is left out. Only the Sphinx main body
  (`div.body`) is read: navigation, sidebars, footers and the in-page tables of contents
  (which repeat headings verbatim and would leak the queries) are not;
* blocks: the text of each paragraph, list item, definition term, table cell and code
  block; the heading of a section is *not* part of any passage;
* passages: the blocks of one section (the innermost <section>), in document order, packed
  into passages of at most --max-words words (default 100; a longer block is cut at word
  boundaries). A passage never spans two sections;
* queries: section headings (h2-h4) of at least 3 words whose text (case-folded) occurs
  exactly once in the corpus, whose section has 1 to 10 direct passages, and which are not
  generic ("Examples", "Notes", ...). Each query's relevant passages (grade 1) are the
  passages of its own section. At most --queries queries are kept, chosen by SHA-1 of the
  section key (deterministic, not biased by page order).

Writes OUT_DIR/passages.jsonl ({"id", "page", "section", "heading", "text"}),
OUT_DIR/queries.jsonl ({"id", "text", "page", "section"}) and OUT_DIR/qrels.tsv
(query id, passage id, grade), in TREC-like order.
"""

import hashlib
import html.parser
import json
import os
import re
import sys

DIRS = ["tutorial", "faq", "howto", "reference", "library"]
BLOCK = {"p", "pre", "dt", "li", "td", "th", "caption", "blockquote", "dd", "div"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
SKIP = {"script", "style", "nav"}
# Tables of contents repeat other sections' headings verbatim: they would leak the queries.
SKIP_DIV_CLASSES = {"toctree-wrapper", "contents", "topic"}
NUMBERING = re.compile(r"^(\d+\.)+\d*\s+")
GENERIC = {
    "examples", "example", "notes", "footnotes", "see also", "introduction", "overview",
    "table of contents", "contents", "summary", "usage", "functions", "classes",
    "exceptions", "constants", "module contents",
}


class Page(html.parser.HTMLParser):
    """Collects (section key, heading, block text) from one Sphinx page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth_in_body = 0  # >0 while inside div.body
        self.div_depth = 0
        self.sections = []  # stack of [id, heading, heading level]
        self.heading = None  # (level, text parts) while inside a heading
        self.skip = 0
        self.skip_div = 0  # div depth at which a skipped div (a table of contents) opened
        self.headerlink = 0
        self.buf = []
        self.blocks = []  # (section id, heading, level, text)
        self.section_order = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            if self.depth_in_body:
                self.div_depth += 1
                classes = set((a.get("class") or "").split())
                if not self.skip_div and classes & SKIP_DIV_CLASSES:
                    self.flush()
                    self.skip_div = self.div_depth
            elif a.get("role") == "main" and "body" in (a.get("class") or "").split():
                self.depth_in_body = 1
                self.div_depth = 1
                return
        if not self.depth_in_body:
            return
        if tag in SKIP:
            self.skip += 1
        elif tag == "section":
            self.flush()
            self.sections.append([a.get("id", "?"), "", 0])
        elif tag in HEADINGS:
            self.flush()
            self.heading = (int(tag[1]), [])
        elif tag == "a" and "headerlink" in (a.get("class") or ""):
            self.headerlink += 1
        elif tag in BLOCK or tag == "br":
            self.flush()

    def handle_endtag(self, tag):
        if not self.depth_in_body:
            return
        if tag == "div":
            self.flush()
            if self.skip_div == self.div_depth:
                self.skip_div = 0
            self.div_depth -= 1
            if self.div_depth == 0:
                self.depth_in_body = 0
            return
        if tag in SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "section":
            self.flush()
            if self.sections:
                self.sections.pop()
        elif tag in HEADINGS and self.heading is not None:
            level, parts = self.heading
            text = NUMBERING.sub("", " ".join("".join(parts).split()))
            if self.sections:
                self.sections[-1][1] = text
                self.sections[-1][2] = level
            self.heading = None
        elif tag == "a" and self.headerlink:
            self.headerlink -= 1
        elif tag in BLOCK:
            self.flush()

    def handle_data(self, data):
        if not self.depth_in_body or self.skip or self.skip_div or self.headerlink:
            return
        if self.heading is not None:
            self.heading[1].append(data)
        else:
            self.buf.append(data)

    def flush(self):
        text = " ".join("".join(self.buf).split())
        self.buf = []
        if text and self.sections:
            sid, heading, level = self.sections[-1]
            self.blocks.append((sid, heading, level, text))


def pack(words_list, max_words):
    """Packs blocks (lists of words) into passages of at most max_words words."""
    out, cur = [], []
    for words in words_list:
        while len(words) > max_words:
            if cur:
                out.append(cur)
                cur = []
            out.append(words[:max_words])
            words = words[max_words:]
        if len(cur) + len(words) > max_words and cur:
            out.append(cur)
            cur = []
        cur = cur + words
    if cur:
        out.append(cur)
    return out


def main():
    args = sys.argv[1:]
    max_words, n_queries, max_passages = 100, 300, 8000
    if "--max-passages" in args:
        i = args.index("--max-passages")
        max_passages = int(args[i + 1])
        del args[i : i + 2]
    if "--max-words" in args:
        i = args.index("--max-words")
        max_words = int(args[i + 1])
        del args[i : i + 2]
    if "--queries" in args:
        i = args.index("--queries")
        n_queries = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    root, out_dir = args
    pages = []
    for d in DIRS:
        base = os.path.join(root, d)
        if not os.path.isdir(base):
            sys.exit(f"{base}: not found (is HTML_ROOT the package's html/ directory?)")
        here = []
        for dirpath, _, files in os.walk(base):
            here += [os.path.join(dirpath, f) for f in files if f.endswith(".html")]
        pages += sorted(here)
    passages = []  # dicts
    sections = {}  # key -> dict(heading, level, passage ids)
    for path in pages:
        if len(passages) >= max_passages:
            break
        rel = os.path.relpath(path, root)
        p = Page()
        with open(path, encoding="utf-8") as f:
            p.feed(f.read())
        p.close()
        order, by_sec = [], {}
        for sid, heading, level, text in p.blocks:
            if sid not in by_sec:
                by_sec[sid] = (heading, level, [])
                order.append(sid)
            by_sec[sid][2].append(text.split())
        for sid in order:
            heading, level, blocks = by_sec[sid]
            key = f"{rel}#{sid}"
            ids = []
            for words in pack(blocks, max_words):
                ids.append(len(passages))
                passages.append(
                    {"id": len(passages), "page": rel, "section": sid,
                     "heading": heading, "text": " ".join(words)}
                )
            sections[key] = {"heading": heading, "level": level, "ids": ids}
    counts = {}
    for s in sections.values():
        h = s["heading"].casefold()
        counts[h] = counts.get(h, 0) + 1
    eligible = []
    for key, s in sections.items():
        h = s["heading"]
        if (
            2 <= s["level"] <= 4
            and len(h.split()) >= 3
            and counts[h.casefold()] == 1
            and 1 <= len(s["ids"]) <= 10
            and h.casefold().rstrip(".") not in GENERIC
            and s["ids"][-1] < len(passages)
        ):
            eligible.append((hashlib.sha1(key.encode()).hexdigest(), key, s))
    eligible.sort()
    chosen = eligible[:n_queries]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "passages.jsonl"), "w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "queries.jsonl"), "w", encoding="utf-8") as fq, open(
        os.path.join(out_dir, "qrels.tsv"), "w", encoding="utf-8"
    ) as fr:
        for qid, (_, key, s) in enumerate(chosen):
            page, sid = key.split("#", 1)
            fq.write(json.dumps({"id": qid, "text": s["heading"], "page": page, "section": sid},
                                ensure_ascii=False) + "\n")
            for pid in s["ids"]:
                fr.write(f"{qid}\t{pid}\t1\n")
    words = sum(len(p["text"].split()) for p in passages)
    print(
        f"{len(set(p['page'] for p in passages))} pages, {len(sections)} sections, {len(passages)} passages, "
        f"{words} words, {len(eligible)} eligible headings, {len(chosen)} queries",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
