"""``rerank_plugins.eval.data``: the shipped public sets found by name, gzipped JSONL, and the
lookup order: a path, ``$RERANK_DATA_DIR``, ``./data``, the repository's data/, the bundled sets."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from rerank_plugins import datasets
from rerank_plugins.eval import data as eval_data
from rerank_plugins.eval.data import (
    DATA_DIR_ENV,
    Collection,
    EvalSet,
    load_collection,
    locate_collection,
    read_trec_qrels,
)

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
# Where the "repository beside the package" rule looks: this clone's data/ only when the
# package is imported from the clone; tests/run.sh tests an installed copy.
BESIDE_PACKAGE = Path(eval_data.__file__).resolve().parents[2] / "data"


def _tiny_set(folder: Path, *, gzipped: bool, doc_text: str = "json.load reads a file") -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = json.dumps({"_id": "d1", "title": "JSON", "text": doc_text}) + "\n"
    if gzipped:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.write(corpus)
    else:
        (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "read json"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    return folder


@pytest.mark.parametrize(
    ("name", "docs", "queries", "judged"),
    [
        ("medquad-liveqa", 15_825, 60, 223),
        ("xquad-en", 240, 1_190, 1_190),
        ("xquad-zh", 240, 1_190, 1_190),
    ],
)
def test_shipped_sets_load_by_name_with_their_counts(
    name: str, docs: int, queries: int, judged: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # From a folder of the clone that has no data/ (where a notebook runs): the nearest data/
    # above it is found, whether the package is installed from the clone or not.
    monkeypatch.chdir(REPO_DATA.parent / "notebooks")
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert locate_collection(name) == REPO_DATA / name
    coll = load_collection(name)
    assert (REPO_DATA / name / "corpus.jsonl.gz").is_file()  # read gzipped
    assert coll.name == f"{name} (test)"
    assert len(coll.doc_ids) == len(set(coll.doc_ids)) == docs
    assert len(coll.queries) == queries
    assert sum(len(j) for j in coll.qrels.values()) == judged
    assert set(coll.qrels) <= set(coll.queries)
    known = set(coll.doc_ids)
    assert all(d in known for j in coll.qrels.values() for d in j)


def test_gzipped_and_plain_corpus_read_the_same(tmp_path: Path) -> None:
    plain = load_collection(_tiny_set(tmp_path / "plain", gzipped=False))
    packed = load_collection(_tiny_set(tmp_path / "packed", gzipped=True))
    assert packed.texts == plain.texts == ("JSON. json.load reads a file",)
    assert packed.qrels == plain.qrels == {"q1": {"d1": 2}}


def test_lookup_order_path_then_env_then_cwd_then_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir, cwd = tmp_path / "env", tmp_path / "cwd"
    _tiny_set(env_dir / "xquad-en", gzipped=False, doc_text="from the env folder")
    _tiny_set(cwd / "data" / "xquad-en", gzipped=False, doc_text="from ./data")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(DATA_DIR_ENV, str(env_dir))
    assert locate_collection("xquad-en") == env_dir / "xquad-en"
    from_env = load_collection("xquad-en")
    assert "from the env folder" in from_env.texts[0]
    assert from_env.source == "$RERANK_DATA_DIR/xquad-en"  # no machine path in a report

    monkeypatch.delenv(DATA_DIR_ENV)
    assert locate_collection("xquad-en") == cwd / "data" / "xquad-en"
    assert "from ./data" in load_collection("xquad-en").texts[0]

    shutil.rmtree(cwd / "data")
    if BESIDE_PACKAGE == REPO_DATA:  # the package imported from this clone (not installed)
        assert locate_collection("xquad-en") == REPO_DATA / "xquad-en"
        assert load_collection("xquad-en").source == "the repository's data/xquad-en"
    else:  # installed: outside the clone a shipped set needs $RERANK_DATA_DIR
        with pytest.raises(ValueError, match="no data set 'xquad-en'"):
            locate_collection("xquad-en")

    # An existing path wins over everything, also when it is named like a shipped set.
    _tiny_set(cwd / "xquad-en", gzipped=True, doc_text="the path itself")
    assert locate_collection("xquad-en") == Path("xquad-en")
    assert "the path itself" in load_collection("xquad-en").texts[0]


def test_bundled_set_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert locate_collection("eval_en") == "eval_en"
    assert load_collection("eval_en").source == "bundled set eval_en"
    _tiny_set(tmp_path / "data" / "eval_en", gzipped=False)
    assert load_collection("eval_en").doc_ids == ("d1",)


def test_unknown_name_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_DATA.parent / "notebooks")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "sets"))
    with pytest.raises(ValueError, match="no data set 'nope'") as info:
        load_collection("nope")
    message = str(info.value)
    for place in (tmp_path / "sets" / "nope", REPO_DATA / "nope", BESIDE_PACKAGE / "nope"):
        assert str(place) in message
    assert "medquad-liveqa" in message and "eval_en" in message  # what can be named


# One reader for every qrels file, TREC and BEIR layouts: trec_eval writes "2.0" in some tools'
# output, and hand-made files carry comments; the package's reader and BEIR's read them alike.
QRELS_FILES = [
    ("qrels.txt", "q1 0 d1 2\nq1 0 d2 0\nq2 0 d9 1\n", {"q1": {"d1": 2, "d2": 0}, "q2": {"d9": 1}}),
    ("test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\n", {"q1": {"d1": 2}}),
    (
        "qrels.txt",
        "# judged by hand\nq1 0 d1 2.0\nq1 0 d2 0\n\n# second query\nq2 0 d9 1\n",
        {"q1": {"d1": 2, "d2": 0}, "q2": {"d9": 1}},
    ),
    (
        "test.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t2\n# a note\nq1\td3\t1.0\n",
        {"q1": {"d1": 2, "d3": 1}},
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), QRELS_FILES)
def test_qrels_reader_takes_float_grades_comments_headers_and_both_layouts(
    tmp_path: Path, name: str, text: str, expected: dict[str, dict[str, int]]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert read_trec_qrels(path) == expected


def test_qrels_reader_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t2\nq1\td2\tvery\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 'qid \[0\] docid grade'"):
        read_trec_qrels(bad)


def test_package_layout_reads_float_grades_and_comments_too(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        '# my corpus\n{"id": "d1", "text": "a"}\n{"id": "d2", "text": "b", "title": "B"}\n'
    )
    (folder / "queries.jsonl").write_text('{"id": "q1", "text": "which"}\n')
    (folder / "qrels.tsv").write_text("query_id doc_id grade\n# q1\nq1 d1 3.0\nq1 d2 0\n")
    for loaded in (load_collection(folder), datasets.read_eval_set(folder)):
        assert loaded.qrels == {"q1": {"d1": 3, "d2": 0}}
        assert loaded.texts == ("a", "B. b")
        assert [d.id for d in loaded.corpus] == ["d1", "d2"]


def test_one_data_model_for_bundled_and_public_sets() -> None:
    bundled = datasets.load_eval_set("eval_en")
    assert isinstance(bundled, EvalSet) and Collection is EvalSet
    assert load_collection("eval_en") == bundled
    public = load_collection("xquad-zh")
    assert isinstance(public, EvalSet)
    assert public.texts[0] == public.corpus[0].full_text
    assert isinstance(public.corpus[0], datasets.Document)


def test_package_layout_rejects_judgements_of_unknown_ids(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"id": "d1", "text": "a"}\n')
    (folder / "queries.jsonl").write_text('{"id": "q1", "text": "which"}\n')
    (folder / "qrels.tsv").write_text("q1 d1 1\nq1 d7 2\n")
    with pytest.raises(ValueError, match="unknown ids: document d7"):
        load_collection(folder)
