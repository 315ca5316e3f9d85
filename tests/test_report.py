"""The HTML report of a run folder, built by hand the way `multigan train` leaves it."""
from __future__ import annotations

import io
import json
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from multigan.cli import main
from multigan.errors import MultiganError
from multigan.report import write_report

AUDIO_STEPS = [25 * k for k in range(1, 15)]  # 14 previews: more than the 12 shown
EVENT_MESSAGE = "D_total is NaN <lowering lr & restoring>"


# A run folder -------------------------------------------------------------
def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _wav(path: Path) -> None:
    buffer = io.BytesIO()  # written by Python, not libsndfile, which cannot open a name that is not UTF-8
    sf.write(buffer, np.zeros(400, np.float32), 8000, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue())


def _jsonl(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def make_run(folder: Path, *, audio: bool) -> Path:
    folder.mkdir(parents=True)
    modality = "mel" if audio else "image"
    (folder / "config.json").write_text(json.dumps(
        {"name": f"{modality}-test", "data": {"modality": modality}, "train": {"steps": 400, "log_every": 10}}))
    log = []
    for i, step in enumerate((10, 20, 30, 40)):
        log.append({"step": step, "time": 1_700_000_000 + 60 * i, "img_per_s": 900.0 + i, "d_real": 0.6,
                    "d_fake": -0.4, "d_adv": 1.2, "gp": 0.1, "D_total": 1.3 - 0.1 * i, "g_adv": 0.8,
                    "G_total": 0.8 + 0.1 * i, "grad_norm_D": 2.0, "grad_norm_G": 0.5})
    log[2]["D_total"] = math.nan  # json.dumps writes NaN, as the trainer does
    log[2]["grad_norm_D"] = math.inf
    _jsonl(folder / "log.jsonl", log, tail='{"step": 50, "time": 17000')  # killed mid-write
    steps = AUDIO_STEPS if audio else [100, 200, 300]
    for step in steps:
        _png(folder / "previews" / f"step-{step:07d}.png", step)
        if audio:
            _wav(folder / "previews" / f"step-{step:07d}.wav")
    if not audio:
        return folder

    _jsonl(folder / "metrics.jsonl", [
        {"step": step, "time": 1_700_000_100 + step, "n": 256, "fid": fid, "kid": kid, "kid_std": 0.002,
         "classifier_score": 3.1, "classifier_score_se": 0.1, "classes": 10, "class_entropy": 2.2,
         "precision": 0.6, "recall": 0.4, "diversity": 0.3, "train_distance": 0.9, "seconds": 4.2}
        for step, fid, kid in ((100, 80.0, 0.05), (200, 42.5, 0.02), (300, 55.0, 0.03))])
    _jsonl(folder / "events.jsonl", [
        {"step": 30, "time": 1_700_000_120, "kind": "non-finite", "message": EVENT_MESSAGE},
        {"step": 30, "time": 1_700_000_121, "kind": "restored", "message": "restored step 20"}])
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    for name in ("step-0000200.pt", "step-0000350.pt", "latest.pt", "best.pt"):
        (checkpoints / name).write_bytes(b"")
    (checkpoints / "best.json").write_text(json.dumps({"step": 200, "fid": 42.5, "path": str(checkpoints / "best.pt")}))
    samples = folder / "samples"
    for i in range(3):
        _png(samples / f"sample-{i:04d}.png", i)
        _wav(samples / f"sample-{i:04d}.wav")
    _png(samples / "sample-grid.png", 99)
    (samples / "generation.json").write_text(json.dumps({"step": 350, "seed": 0, "n": 3}))
    (folder / "evaluation.json").write_text(json.dumps({"fid": 41.0, "n": 1000, "checkpoint": "best.pt",
                                                        "per_class": [1, 2]}))
    return folder


class Page(HTMLParser):
    def __init__(self, path: Path):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def links(self, tag: str | None = None, attr: str | None = None) -> list[str]:
        return [a[k] for t, a in self.tags if tag in (None, t) for k in ("src", "href")
                if attr in (None, k) and a.get(k) is not None]


def assert_links_resolve(page: Path) -> Page:
    parsed = Page(page)
    for link in parsed.links():
        if link.startswith("#"):
            continue
        assert "://" not in link and not link.startswith("/"), f"not a relative link: {link}"
        # %XX are the name's bytes, which need not be UTF-8: decode them as the file system does
        assert (page.parent / os.fsdecode(unquote_to_bytes(link))).is_file(), f"{link} does not resolve from {page.parent}"
    return parsed


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report") / "a run", audio=True)  # a space: links must be quoted


@pytest.fixture(scope="module")
def audio_page(audio_run) -> Path:
    return write_report(audio_run)


# The page -----------------------------------------------------------------
def test_page_is_static_and_every_link_resolves(audio_run, audio_page):
    assert audio_page == audio_run / "report" / "index.html"
    parsed = assert_links_resolve(audio_page)
    assert not [t for t, _ in parsed.tags if t in ("script", "link", "iframe")]
    assert all(a.get("loading") == "lazy" and a.get("alt") for t, a in parsed.tags if t == "img")
    assert "../previews/step-0000025.png" in parsed.links("img")
    assert "../a%20run" not in audio_page.read_text()  # the page sits inside the run folder


def test_plots_are_pngs(audio_page):
    plots = audio_page.parent / "plots"
    names = {"losses.png", "scores.png", "grad_norms.png", "throughput.png", "metrics.png"}
    assert {p.name for p in plots.iterdir()} == names
    for path in plots.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
    assert {f"plots/{n}" for n in names} <= set(Page(audio_page).links("img"))


def test_previews_are_evenly_spaced_in_order_with_players(audio_page):
    parsed = Page(audio_page)
    steps = [int(m.group(1)) for s in parsed.links("img") if (m := re.search(r"previews/step-(\d+)\.png$", s))]
    assert len(steps) == 12 and steps == sorted(steps)
    assert steps[0] == AUDIO_STEPS[0] and steps[-1] == AUDIO_STEPS[-1]
    players = parsed.links("audio")
    assert [f"../previews/step-{s:07d}.wav" for s in steps] == [p for p in players if "previews" in p]
    assert [f"../samples/sample-{i:04d}.wav" for i in range(3)] == [p for p in players if "samples" in p]
    assert "../samples/sample-grid.png" in parsed.links("img")


def test_header_metrics_and_health(audio_page):
    source = audio_page.read_text()
    text = " ".join(Page(audio_page).text)
    assert "mel-test" in text and "350 / 400" in text  # the newest checkpoint is past the log's end
    assert "step 200, FID 42.5" in text
    assert EVENT_MESSAGE in text and "&lt;lowering lr &amp; restoring&gt;" in source  # shown, and escaped
    assert "step 30: D_total, grad_norm_D" in text  # the NaN/inf log line is listed
    assert "1 unreadable line" in text  # the truncated last line
    assert "0.03 ± 0.002" in text  # latest KID with its spread
    assert "41" in text and "per_class" not in text  # evaluation.json: scalars only


def test_custom_out_folder_links_back(audio_run, tmp_path):
    page = write_report(audio_run, tmp_path / "elsewhere" / "page")
    assert page == tmp_path / "elsewhere" / "page" / "index.html"
    parsed = assert_links_resolve(page)
    assert any(link.endswith("a%20run/previews/step-0000350.wav") for link in parsed.links("audio"))


def test_image_run_without_extras(tmp_path):
    run = make_run(tmp_path / "image run", audio=False)
    page = write_report(run)
    parsed = assert_links_resolve(page)
    assert not [t for t, _ in parsed.tags if t == "audio"]
    steps = [s for s in parsed.links("img") if "previews" in s]
    assert steps == [f"../previews/step-{s:07d}.png" for s in (100, 200, 300)]
    assert not (page.parent / "plots" / "metrics.png").exists()
    health = Page(page).text
    assert "none" in health[health.index("Health events") + 1:]


def test_config_alone_gets_a_page(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    page = write_report(tmp_path)
    assert "{not json" in page.read_text()
    assert not list((page.parent / "plots").iterdir())


def test_file_names_that_are_not_utf8(tmp_path):
    # It crashed with UnicodeEncodeError: a name's undecodable bytes cannot go into a UTF-8 page as they are.
    run = make_run(tmp_path / os.fsdecode(b"run-\xff"), audio=True)
    _wav(run / "samples" / os.fsdecode(b"sample-\xff\xfe.wav"))
    _png(run / "samples" / os.fsdecode(b"sample-\xff\xfe.png"), 7)
    for out, prefix in ((None, "../samples/"), (tmp_path / "elsewhere", "../run-%FF/samples/")):
        page = write_report(run, out)
        parsed = assert_links_resolve(page)
        assert prefix + "sample-%FF%FE.wav" in parsed.links("audio")
        assert prefix + "sample-%FF%FE.png" in parsed.links("img")
        assert "sample-\ufffd\ufffd.wav" in parsed.text  # shown with replacement characters
        assert os.fsdecode(b"\xff") not in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "empty"])
def test_not_a_run_folder(tmp_path, make):
    with pytest.raises(MultiganError) as err:
        write_report(make(tmp_path))
    assert "\n" not in str(err.value) and "run folder" in str(err.value)


# The command line ---------------------------------------------------------
def test_cli_report(audio_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["report", str(audio_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed
    assert (out / "index.html").resolve().as_uri() in printed

    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "multigan report: error:" in err


# Captions, metric names, spreads, classes --------------------------------
PLOT_TITLES = {"Losses", "Mean discriminator scores", "Gradient norms", "Throughput", "Evaluation metrics"}


def _figcaptions(page: Path) -> list[str]:
    captions, inside = [], False

    class Captions(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal inside
            inside = tag == "figcaption" or inside
            if tag == "figcaption":
                captions.append("")

        def handle_endtag(self, tag):
            nonlocal inside
            inside = False if tag == "figcaption" else inside

        def handle_data(self, data):
            if inside:
                captions[-1] += data

    Captions().feed(page.read_text(encoding="utf-8"))
    return captions


def test_plot_captions_do_not_repeat_the_titles(tmp_path):
    run = make_run(tmp_path / "run", audio=True)
    page = write_report(run)
    source = page.read_text()
    curves = source[source.index('id="curves"'):source.index('id="metrics"')]
    captions = _figcaptions(page)[:5]
    assert len(captions) == 5 and curves.count("<figcaption>") == 5
    for caption in captions:
        assert caption.strip() and not any(caption.lower().startswith(t.lower()) for t in PLOT_TITLES), caption
    assert "best checkpoint (step 200)" in captions[-1]


def test_metric_plots_and_tables_use_human_labels(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles = []
    set_title = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, label, *a, **k: (titles.append(label), set_title(self, label, *a, **k))[1])
    run = make_run(tmp_path / "run", audio=True)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 400, "fid": 50.0, "diversity_ratio": 0.8, "train_distance": 0.7}) + "\n")
    page = write_report(run)
    assert "distance to training set (higher is better)" in titles
    assert any(t.startswith("classifier-feature FID") or t.startswith("FID") for t in titles)
    assert "diversity ratio" in titles  # a key the library does not name: at least no underscores
    assert not [t for t in titles if "_" in t]
    text = " ".join(Page(page).text)
    assert "distance to training set (higher is better)" in text and "train_distance" not in text


@pytest.mark.parametrize("kid_std", [None, 0.0, "missing"])
def test_kid_without_a_measured_spread_shows_n_a(tmp_path, kid_std):
    run = make_run(tmp_path / "run", audio=True)
    record = {"step": 400, "n": 500, "fid": 50.0, "kid": 0.0123, "kid_std": kid_std}
    if kid_std == "missing":
        del record["kid_std"]
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    (run / "evaluation.json").write_text(json.dumps({"fid": 41.0, "kid": 0.02, "kid_std": kid_std, "n": 1000}))
    text = " ".join(Page(write_report(run)).text)
    assert text.count("± n/a") == 2  # the latest metrics and evaluation.json
    assert "± 0" not in text and "kid_std" not in text


def test_sound_samples_show_their_class(tmp_path):
    run = make_run(tmp_path / "run", audio=True)
    (run / "samples" / "generation.json").write_text(json.dumps({"step": 350, "seed": 0, "n": 3, "labels": [7, 1, 7]}))
    captions = _figcaptions(write_report(run))
    assert "sample-0000.wav · class 7" in captions and "sample-0001.wav · class 1" in captions
    assert "sample-0002.wav · class 7" in captions


def test_samples_recorded_outside_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run", audio=False)
    outside = tmp_path / "somewhere" / "out"
    _png(outside / "sample-grid.png", 5)
    (outside / "generation.json").write_text(json.dumps({"step": 300, "seed": 4, "n": 1, "truncation": 0.7}))
    (run / "generations.json").write_text(json.dumps({"folders": [str(outside), str(tmp_path / "gone"), 5]}))
    page = write_report(run)
    parsed = assert_links_resolve(page)
    assert "../../somewhere/out/sample-grid.png" in parsed.links("img")
    assert "truncation 0.7" in " ".join(parsed.text)
    assert "No samples" not in " ".join(parsed.text)
