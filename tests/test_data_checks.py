"""Data that used to crash or slip through: one line naming the file, row and field; counted
duplicates; refused validation data that is the training data; weighted mixes; rows checked when the
data module is built (before any tokenizer or model)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from lit_align.data import DataError, DataSource, PreferenceDataModule
from lit_align.data.mixing import mix_counts, pick
from lit_align.errors import ConfigError


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def pairs(n: int, tag: str = "") -> list[dict]:
    return [{"prompt": f"sort: {i} {tag}", "chosen": f"{i} ok", "rejected": f"{i} no"} for i in range(n)]


def built(tokenizer, **kwargs) -> PreferenceDataModule:
    dm = PreferenceDataModule(**kwargs)
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    return dm


GOOD = {"prompt": "a", "chosen": "b", "rejected": "c"}
# (row as a jsonl line, text the one line must hold): each used to crash with another exception or pass
BAD = {
    "lone surrogate": ('{"prompt": "hi \\ud800", "chosen": "b", "rejected": "c"}', "field 'prompt' holds a lone surrogate '\\ud800'"),
    "surrogate in a message": ('{"prompt": [{"role": "user", "content": "\\udfff"}], "chosen": [{"role": "assistant", "content": "b"}], '
                               '"rejected": [{"role": "assistant", "content": "c"}]}', "'prompt' message 0 content holds a lone surrogate"),
    "401-digit score": ('{"prompt": "a", "chosen": "b", "rejected": "c", "score_chosen": ' + "9" * 401 + ', "score_rejected": 1}',
                        "field 'score_chosen' must be a finite number, got an integer of 1333 bits"),
    "5000-digit score": ('{"prompt": "a", "chosen": "b", "rejected": "c", "score_chosen": ' + "9" * 5000 + ', "score_rejected": 1}',
                         "unreadable JSON (ValueError"),
    "role 'human'": ({"prompt": [{"role": "human", "content": "hi"}], "chosen": [{"role": "assistant", "content": "b"}],
                      "rejected": [{"role": "assistant", "content": "c"}]}, "message 0 has role 'human'; roles must be one of system, user, assistant, tool"),
    "role 'gpt' in completion": ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "gpt", "content": "b"}],
                                 "rejected": [{"role": "assistant", "content": "c"}]}, "field 'chosen' message 0 has role 'gpt'"),
    "role not a string": ({"chosen": [{"role": 1, "content": "hi"}, {"role": "assistant", "content": "b"}],
                           "rejected": [{"role": 1, "content": "hi"}, {"role": "assistant", "content": "c"}]}, "has role int"),
    "only a system prompt": ({"prompt": [{"role": "system", "content": "Be brief."}], "chosen": [{"role": "assistant", "content": "b"}],
                              "rejected": [{"role": "assistant", "content": "c"}]}, "field 'prompt' has no user turn (roles: system)"),
    "empty prompt list": ({"prompt": [], "chosen": [{"role": "assistant", "content": "b"}],
                           "rejected": [{"role": "assistant", "content": "c"}]}, "field 'prompt' is an empty conversation"),
    "completion starts with user": ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "user", "content": "b"}],
                                     "rejected": [{"role": "assistant", "content": "c"}]}, "field 'chosen' must start with an assistant message"),
    "unpaired (KTO) row": ({"prompt": "a", "completion": "b", "label": True}, "unpaired preference row"),
    "bool score": ({**GOOD, "score_chosen": True, "score_rejected": 1}, "field 'score_chosen' must be a number, got bool"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_row_is_one_line_naming_file_row_and_field(tmp_path, case):
    line, message = BAD[case]
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, line])
    with pytest.raises(DataError) as err:  # at construction: no tokenizer is attached, none is needed
        PreferenceDataModule(train_path=path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}:2: ") and message in text, text


def test_skip_counts_every_kind(tmp_path, tokenizer):
    lines = [GOOD] + [line for line, _ in BAD.values()]
    dm = built(tokenizer, train_path=write_jsonl(tmp_path / "t.jsonl", lines), on_bad_row="skip")
    assert len(dm.train_set) == 1 and dm.counts["train"]["bad_rows_skipped"] == len(BAD)


def test_saved_dataset_with_an_empty_split(tmp_path):
    import datasets

    path = tmp_path / "saved"
    empty = datasets.Dataset.from_list([GOOD]).select([])
    datasets.DatasetDict({"train": datasets.Dataset.from_list([GOOD] * 2), "test": empty}).save_to_disk(str(path))
    with pytest.raises(DataError, match=f"^{path}: a saved dataset with an empty split"):
        PreferenceDataModule(train_path=str(path), val_split="test")


def test_tokenizer_failure_names_the_row(tmp_path):
    """Whatever a tokenizer raises on a row's text (here: a TypeError) comes back naming the row."""
    class Refusing:
        eos_token_id, bos_token_id, pad_token_id = 1, None, 0

        def __call__(self, text, add_special_tokens=False):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")

    dm = PreferenceDataModule(train_path=write_jsonl(tmp_path / "t.jsonl", [GOOD]), chat_template=False)
    dm._tokenizer = lambda: Refusing()
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'prompt': the tokenizer failed on it \(TypeError: TextEncodeInput"):
        dm.setup("fit")


def test_duplicates_are_counted(tmp_path, tokenizer, capsys):
    rows = pairs(5) + pairs(2)  # the first two again
    dm = built(tokenizer, train_path=write_jsonl(tmp_path / "t.jsonl", rows))
    assert dm.counts["train"]["duplicate_pairs"] == 2 and len(dm.train_set) == 7
    assert "[data] train: 7 pairs from 7 rows (duplicate_pairs 2)" in capsys.readouterr().out


@pytest.mark.parametrize("val", ["same path", "a copy", "a subset"])
def test_validation_data_that_is_training_data_is_refused(tmp_path, tokenizer, val):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(6))
    val_path = {"same path": train, "a copy": write_jsonl(tmp_path / "copy.jsonl", pairs(6)),
                "a subset": write_jsonl(tmp_path / "sub.jsonl", pairs(6)[2:4])}[val]
    with pytest.raises(DataError, match="every one of the .* validation pairs is also a training pair"):
        built(tokenizer, train_path=train, val_path=val_path)
    dm = built(tokenizer, train_path=train, val_path=val_path, allow_val_in_train=True)  # asked for: counted
    assert dm.counts["val"]["also_in_train"] == len(dm.val_set)


def test_partly_shared_validation_is_counted(tmp_path, tokenizer):
    val = pairs(2) + pairs(3, tag="held out")
    dm = built(tokenizer, train_path=write_jsonl(tmp_path / "t.jsonl", pairs(6)), val_path=write_jsonl(tmp_path / "v.jsonl", val))
    assert dm.counts["val"]["also_in_train"] == 2 and len(dm.val_set) == 5


def test_mix_counts_by_hand():
    assert mix_counts([100, 10], [1, 1], None) == [10, 10]  # the smaller source binds: used whole
    assert mix_counts([100, 10], [3, 1], None) == [30, 10]
    assert mix_counts([100, 10], [0.75, 0.25], None) == [30, 10]  # weights are normalised
    assert mix_counts([100, 10], [1, 1], 30) == [15, 15]  # source 2 repeated: 10 + 5
    assert mix_counts([5, 5, 5], [1, 1, 1], 10) == [4, 3, 3]  # largest remainder, ties to the first


def test_pick_is_seeded_whole_passes_then_a_subset():
    a, b, c = pick(10, 25, 0, 0), pick(10, 25, 0, 0), pick(10, 25, 1, 0)
    assert a == b and a != c
    assert a[:20] == list(range(10)) * 2 and len(set(a[20:])) == 5


def test_weighted_mix_of_two_sources(tmp_path, tokenizer, capsys):
    import datasets

    first = write_jsonl(tmp_path / "a.jsonl", pairs(12, tag="a"))
    saved = tmp_path / "b"
    conv = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(8)]
    conv, held_out = conv[:6], conv[6:]
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(conv), "test_prefs": datasets.Dataset.from_list(held_out)}).save_to_disk(str(saved))
    sources = [DataSource(first, weight=2.0), DataSource(str(saved), split="train_prefs", val_split="test_prefs", weight=1.0)]
    dm = built(tokenizer, sources=sources, seed=5)
    prompts = [tokenizer.decode(p.prompt_ids) for p in dm.train_set.pairs]
    from_b = sum("q" in p for p in prompts)
    assert (len(prompts), from_b) == (18, 6)  # 2:1, b binds (6 pairs): 12 from a (all), 6 from b
    assert len(dm.val_set) == 2 and [p.index for p in dm.train_set.pairs] == list(range(18))
    assert "[data] mix: " + f"{saved}[train_prefs] weight 1: 6 of 6 pairs" in capsys.readouterr().out
    again = built(tokenizer, sources=sources, seed=5, mix_size=30)  # a repeats: 20 of its 12, seeded
    other = built(tokenizer, sources=sources, seed=6, mix_size=30)
    decode = lambda dm: [tokenizer.decode(p.prompt_ids) for p in dm.train_set.pairs]  # noqa: E731
    assert len(again.train_set) == 30 and decode(again) != decode(other)
    assert decode(again) == decode(built(tokenizer, sources=sources, seed=5, mix_size=30))


def test_sources_from_yaml_dicts(tmp_path, tokenizer):
    """As the command line gives them: a list of mappings."""
    a, b = write_jsonl(tmp_path / "a.jsonl", pairs(4, "a")), write_jsonl(tmp_path / "b.jsonl", pairs(4, "b"))
    dm = built(tokenizer, sources=[{"path": a, "weight": 1}, {"path": b, "weight": 1}], mix_size=4)
    assert len(dm.train_set) == 4 and dm.mix == [(2, 4), (2, 4)]


def test_cli_reports_a_bad_row_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    """cli.py fit: the data module is built (and its rows checked) before PreferenceModule, whose
    construction loads the tokenizer (for a GGUF source, converting the model first): neither happens."""
    import cli
    from benchmarks.demos.sort_task import write_task
    from lit_align.models import TinyModel
    from tests.test_fit import fit_config

    data = write_task(tmp_path / "data", train=8, val=4, test=4)
    with open(data["train"], "a") as f:
        f.write(json.dumps({"prompt": [{"role": "narrator", "content": "x"}], "chosen": [], "rejected": []}) + "\n")
    loads = []
    original = TinyModel.load_tokenizer
    monkeypatch.setattr(TinyModel, "load_tokenizer", lambda self: loads.append(1) or original(self))
    rc = cli.run(["fit", "--config", str(fit_config(tmp_path, data))])
    err = capsys.readouterr().err
    assert rc == 1 and "train.jsonl:9: field 'prompt' message 0 has role 'narrator'" in err, err
    assert not loads


EXTRA_COLUMNS = {"scores": ("score_chosen", "score_rejected"), "ref_logps": ("ref_chosen_logps", "ref_rejected_logps")}


@pytest.mark.parametrize("extra", sorted(EXTRA_COLUMNS))
@pytest.mark.parametrize("which", ["first", "second", "both"])
def test_sources_that_differ_in_optional_columns_mix_without_them(tmp_path, tokenizer, capsys, extra, which):
    """docs/data-formats.md's own mix (scored ultrafeedback + unscored HH-RLHF) used to be refused: an optional
    column only some sources carry is dropped from the split (counted in the [data] line); kept when all carry it."""
    columns = EXTRA_COLUMNS[extra]
    with_extra = lambda rows: [{**r, columns[0]: 2.0, columns[1]: -1.0} for r in rows]  # noqa: E731
    a, b = pairs(6, "a"), pairs(6, "b")
    a = with_extra(a) if which in ("first", "both") else a
    b = with_extra(b) if which in ("second", "both") else b
    sources = [DataSource(write_jsonl(tmp_path / "a.jsonl", a)), DataSource(write_jsonl(tmp_path / "b.jsonl", b))]
    dm = built(tokenizer, sources=sources)
    values = {getattr(p, extra) for p in dm.train_set.pairs}
    batch = next(iter(dm.train_dataloader()))
    if which == "both":
        assert values == {(2.0, -1.0)} and getattr(batch, extra) is not None
        assert f"{extra}_dropped" not in capsys.readouterr().out
    else:
        assert values == {None} and getattr(batch, extra) is None
        assert f"{extra}_dropped 6)" in capsys.readouterr().out


@pytest.mark.parametrize("n_sources", [1, 2, 3])
@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf"), -float("inf"), True, "2"])
def test_every_bad_weight_is_refused_however_many_sources(tmp_path, n_sources, weight):
    """A lone source's weight was never checked (only a mix's were): weight 0 or NaN trained as if 1."""
    paths = [write_jsonl(tmp_path / f"{i}.jsonl", pairs(3, str(i))) for i in range(n_sources)]
    sources = [{"path": p, "weight": weight if i == n_sources - 1 else 1.0} for i, p in enumerate(paths)]
    # a non-finite weight is refused by the constructors' finite-number check (lit_align.finite) first
    rule = "a finite number" if isinstance(weight, float) and not math.isfinite(weight) else "a number > 0"
    with pytest.raises(ConfigError, match=re.escape(f"sources[{n_sources - 1}].weight must be {rule}, got")):
        PreferenceDataModule(sources=sources)


COMPRESSORS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
@pytest.mark.parametrize("kind", [".jsonl", ".json"])
def test_compressed_json_files_read_as_their_plain_copies(tmp_path, tokenizer, ext, kind):
    """train.jsonl.gz (as datasets' json loader reads it) was refused as an unsupported '.gz' file."""
    import importlib

    rows = pairs(5, "z")
    plain = tmp_path / f"plain{kind}"
    text = json.dumps(rows) if kind == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    plain.write_text(text)
    packed = tmp_path / f"data{kind}{ext}"
    with importlib.import_module(COMPRESSORS[ext]).open(packed, "wb") as f:
        f.write(text.encode())
    from lit_align.data.sources import iter_rows

    assert [row for _, row in iter_rows(str(packed))] == [row for _, row in iter_rows(str(plain))] == rows
    assert len(built(tokenizer, train_path=str(packed)).train_set) == 5
    cut = tmp_path / f"cut{kind}{ext}"
    cut.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) // 2])  # a truncated download
    with pytest.raises(DataError, match=re.escape(f"{cut}: not a readable {ext} file")):
        list(iter_rows(str(cut)))


@pytest.mark.parametrize("name", ["data.jsonl.zst", "data.parquet.gz", "data.csv", "data.csv.gz", "data"])
def test_other_file_types_are_refused_in_one_line(tmp_path, name):
    from lit_align.data.sources import iter_rows

    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        list(iter_rows(str(tmp_path / name)))
