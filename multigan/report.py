"""A static HTML page of a training run: curves, previews, samples and audio players.

Reads only the files `multigan train`, `generate` and `evaluate` leave in a
run folder, so it needs neither torch nor the dataset. The page has inline
CSS, no JavaScript and only relative links: it opens from the file system,
offline, and keeps working when the run folder and the page move together.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from multigan.errors import MultiganError

MAX_PREVIEWS = 12
MAX_CLIPS = 32  # per samples folder: every file shown is one more thing for the browser to load

LOSS_KEYS = ("D_total", "G_total", "d_adv", "g_adv", "gp", "r1")
SCORE_LABELS = {"d_real": "D(x)", "d_fake": "D(G(z))"}
PLOT_NAMES = ("losses.png", "scores.png", "grad_norms.png", "throughput.png", "metrics.png")
_NOT_METRICS = {"step", "time", "n", "seconds"}
_SPREAD_SUFFIXES = ("_std", "_se")  # kid_std, classifier_score_se: shown beside their metric
_LOG_SCALE_METRICS = {"fid", "kid"}
_SAMPLE_FOLDERS = ("samples", "generated")
GENERATIONS = "generations.json"  # in a run folder: every folder `multigan generate` wrote samples of the run to
_PLOT_CAPTIONS = {
    "losses.png": "What each network minimises at each log line; a total is its adversarial term plus the "
                  "weighted penalties.",
    "scores.png": "D's mean output on a real batch and on a generated one: a probability for the classifier "
                  "losses, the raw critic value otherwise.",
    "grad_norms.png": "Norm of each network's gradient at its optimiser step, on a log scale.",
    "throughput.png": "Real examples trained on per second of wall time.",
    "metrics.png": "Figures of samples of the EMA generator at each evaluation; bars show the spread where "
                   "one was measured.",
}
_BAD = ' class="bad"'
_PREVIEW_NAME = re.compile(r"step-(\d+)\.png")
_CHECKPOINT_NAME = re.compile(r"step-(\d+)\.pt")

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;
max-width:1100px;margin:0 auto;padding:1.5rem}
h1{margin:0 0 .5rem}h2{margin-top:2.2rem;padding-bottom:.2rem;border-bottom:1px solid #d0d7de}
nav a{margin-right:1rem}a{color:#0969da}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.5rem 0}
th,td{padding:.25rem .8rem .25rem 0;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{font-weight:600}
pre{background:#f6f8fa;padding:1rem;overflow:auto;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:1rem}
.plots{display:grid;grid-template-columns:1fr;gap:1rem}
figure{margin:0}figcaption{font-size:.85rem;color:#57606a}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
img.px{width:100%;image-rendering:pixelated}img.wide{width:min(100%,640px)}
audio{width:100%;margin-top:.25rem}
.note{color:#57606a;font-size:.9rem}.bad{color:#cf222e}
"""


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `<out_dir or run_dir/report>/index.html` and its plots; returns the page's path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise MultiganError(f"run folder not found: {run}")
    if not (run / "config.json").is_file() and not (run / "log.jsonl").is_file():
        raise MultiganError(f"{run} is not a run folder (no config.json or log.jsonl)")
    out = Path(out_dir) if out_dir is not None else run / "report"
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)

    log, log_skipped = _read_jsonl(run / "log.jsonl")
    metrics, _ = _read_jsonl(run / "metrics.jsonl")
    events, _ = _read_jsonl(run / "events.jsonl")
    best = _read_json(run / "checkpoints" / "best.json")
    best = best if isinstance(best, dict) else None
    best_step = _number(best.get("step")) if best else None

    plots = _plots(log, metrics, best_step, plot_dir)
    for name in PLOT_NAMES:  # a plot this run no longer has must not linger from an earlier report
        if plot_dir / name not in {path for _, path in plots}:
            (plot_dir / name).unlink(missing_ok=True)

    page = _Page(out)
    config = _read_json(run / "config.json")
    config = config if isinstance(config, dict) else None
    name = (config or {}).get("name") or run.resolve().name
    body = [
        f"<header><h1>{_e(name)}</h1>",
        '<nav><a href="#settings">settings</a><a href="#curves">curves</a><a href="#metrics">metrics</a>'
        '<a href="#health">health</a><a href="#previews">previews</a><a href="#samples">samples</a></nav>',
        _summary(run, config, log, best, page),
        "</header>",
        _settings(run / "config.json", config),
        _curves(plots, best_step, page),
        _metrics(metrics, _read_json(run / "evaluation.json")),
        _health(events, log, log_skipped),
        _previews(run / "previews", page),
        _samples(run, page),
        f'<footer class="note"><p>Written by <code>multigan report</code> on {_e(_when(time.time()))}.</p></footer>',
    ]
    path = out / "index.html"
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(name)} · multigan report</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n",
        encoding="utf-8",
    )
    return path


# Reading the run folder ---------------------------------------------------
def _read_json(path: Path) -> Any:
    """The JSON value in `path`, or None when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a .jsonl file, and how many lines were skipped.

    A killed run can leave a truncated last line, so a bad line is skipped
    rather than failing the page. Python's json reads NaN and Infinity.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return [], 0
    records, skipped = [], 0
    for line in filter(str.strip, lines):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _number(x: Any) -> float | None:
    """x as a finite float, or None for NaN, inf, strings and missing values."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """The finite (step, value) pairs of `key`: non-finite figures are left out of plots."""
    steps, values = [], []
    for r in records:
        s, v = _number(r.get("step")), _number(r.get(key))
        if s is not None and v is not None:
            steps.append(s)
            values.append(v)
    return steps, values


def _non_finite(records: list[dict]) -> list[tuple[Any, list[str]]]:
    """(step, keys) of every record holding NaN or inf."""
    found = []
    for r in records:
        keys = [k for k, v in r.items() if isinstance(v, float) and not math.isfinite(v)]
        if keys:
            found.append((r.get("step"), keys))
    return found


def _stepped_files(folder: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """(step, path) of the files in `folder` named like step-NNNNNNN.ext, by step."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return sorted(found)


def _evenly_spaced(items: list, k: int) -> list:
    """All of `items` if there are at most k (k >= 2), else k of them evenly spaced, first and last included."""
    n = len(items)
    if n <= k:
        return list(items)
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


# Plots --------------------------------------------------------------------
def _plots(log: list[dict], metrics: list[dict], best_step: float | None, plot_dir: Path) -> list[tuple[str, Path]]:
    """Write the curves as PNGs; returns (title, path) of each plot that had data."""
    # A Figure on the Agg canvas directly: no GUI backend whatever MPLBACKEND says, and no pyplot global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    diverged = [s for s, _ in _non_finite(log) if _number(s) is not None]

    def figure(width: float, height: float) -> Figure:
        fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    def lines(name: str, title: str, labels: dict[str, str], ylabel: str, log_y: bool = False) -> None:
        curves = []
        for key, label in labels.items():
            steps, values = _series(log, key)
            if log_y:  # a zero norm (no gradients yet) has no place on a log axis
                steps, values = [s for s, v in zip(steps, values) if v > 0], [v for v in values if v > 0]
            if steps:
                curves.append((label, steps, values))
        if not curves:
            return
        fig = figure(8, 3.2)
        ax = fig.add_subplot()
        for label, steps, values in curves:
            ax.plot(steps, values, label=label, lw=1.3, marker="." if len(steps) < 30 else None)
        if log_y:
            ax.set_yscale("log")
        for step in diverged:  # where a NaN or inf was dropped, so a bridged gap does not look like data
            ax.axvline(step, color="#cf222e", alpha=0.25, lw=2)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", ncol=min(len(curves), 6))
        fig.savefig(plot_dir / name)
        written.append((title, plot_dir / name))

    losses = {k: k for k in LOSS_KEYS}
    for total, term in (("D_total", "d_adv"), ("G_total", "g_adv")):
        (s1, v1), (s2, v2) = _series(log, total), _series(log, term)
        if s1 and s1 == s2 and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(v1, v2)):
            del losses[term]  # no penalty terms: one curve would hide the other
            losses[total] = f"{total} = {term}"
    lines("losses.png", "Losses", losses, "loss")
    lines("scores.png", "Mean discriminator scores", SCORE_LABELS, "score")
    lines("grad_norms.png", "Gradient norms", {"grad_norm_D": "D", "grad_norm_G": "G"}, "norm", log_y=True)
    lines("throughput.png", "Throughput", {"img_per_s": "real examples / s"}, "examples / s")

    names = _metric_names(metrics)
    if names:
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig = figure(3.4 * cols, 2.5 * rows)
        for i, key in enumerate(names):
            ax = fig.add_subplot(rows, cols, i + 1)
            points = [(s, v, _spread(r, key) or 0.0) for r in metrics
                      if (s := _number(r.get("step"))) is not None and (v := _number(r.get(key))) is not None]
            steps, values, spread = map(list, zip(*points))
            ax.errorbar(steps, values, yerr=spread if any(spread) else None, marker="o", ms=3, lw=1.2, capsize=2)
            if key in _LOG_SCALE_METRICS and min(values) > 0:
                ax.set_yscale("log")
            if best_step is not None:
                ax.axvline(best_step, color="#cf222e", ls="--", lw=0.9)
            ax.set_title(_metric_title(key), fontsize="medium")
            ax.tick_params(labelsize="small")
            ax.grid(alpha=0.3)
        fig.savefig(plot_dir / "metrics.png")
        written.append(("Evaluation metrics", plot_dir / "metrics.png"))
    return written


def _metric_names(metrics: list[dict]) -> list[str]:
    """Keys with a finite number in some record, in first-seen order; bookkeeping and spreads left out."""
    names: dict[str, None] = {}
    for r in metrics:
        for k, v in r.items():
            if k not in _NOT_METRICS and not k.endswith(_SPREAD_SUFFIXES) and _number(v) is not None \
                    and _number(r.get("step")) is not None:
                names[k] = None
    return list(names)


def _spread(record: dict, key: str) -> float | None:
    """The measured spread of `key`, None where there is none: a KID of one subset has none to measure."""
    for suffix in _SPREAD_SUFFIXES:
        if (s := _number(record.get(key + suffix))) is not None:
            return None if s == 0 and "kid" in key else s  # files of older versions wrote 0.0 for one subset
    return None


def _metric_names_and_spreads() -> tuple[dict[str, tuple[str, bool]], dict[str, str]]:
    # Imported here: the rest of the page needs no torch.
    from multigan.metrics.evaluate import METRICS, SPREADS

    return METRICS, SPREADS


def _metric_title(key: str) -> str:
    """"FID (lower is better)" for "fid"; a key the library does not name is shown with spaces."""
    names, _ = _metric_names_and_spreads()
    if key not in names:
        return key.replace("_", " ")
    label, lower = names[key]
    return f"{label} ({'lower' if lower else 'higher'} is better)"


def _metric_value(record: dict, key: str) -> str:
    """The escaped figure with its spread: "0.03 ± 0.002", or "± n/a" for a metric whose spread was not measured."""
    _, spreads = _metric_names_and_spreads()
    text = _e(_fmt(record[key]))
    spread = _spread(record, key)
    if spread is not None:
        return text + f" ± {_e(_fmt(spread))}"
    if key in spreads or any(key + suffix in record for suffix in _SPREAD_SUFFIXES):
        return text + " ± n/a"
    return text


def _metric_keys(record: dict, known_only: bool = False) -> list[str]:
    """The metrics in `record`: the library's, in its order, then (unless `known_only`) other numbers."""
    names, spreads = _metric_names_and_spreads()
    keys = [k for k in names if k in record]
    if not known_only:
        spread_keys = set(spreads.values()) | {k + s for k in record for s in _SPREAD_SUFFIXES}
        keys += [k for k in record if k not in names and k not in spread_keys and k not in _NOT_METRICS
                 and _number(record[k]) is not None]
    return keys


def _metric_rows(record: dict, keys: list[str]) -> list[tuple[str, str]]:
    """Rows of (title, figure ± spread)."""
    return [(_e(_metric_title(k)), _metric_value(record, k)) for k in keys]


# HTML ---------------------------------------------------------------------
_SURROGATES = re.compile("[\ud800-\udfff]")


def _e(x: Any) -> str:
    # A file name need not be UTF-8: Python keeps its undecodable bytes as lone surrogates
    # (os.fsdecode), which the UTF-8 page cannot hold; they show as U+FFFD.
    return html.escape(_SURROGATES.sub("\ufffd", str(x)))


class _Page:
    """Links from the page's folder: relative and URL-quoted, so the page works for any out_dir."""

    def __init__(self, folder: Path):
        self.folder = folder

    def href(self, target: Path) -> str:
        try:
            rel = os.path.relpath(target, self.folder).replace(os.sep, "/")
        except ValueError:  # another drive on Windows: there is no relative path
            return _e(Path(target).resolve().as_uri())
        return _e(quote(os.fsencode(rel)))  # the name's raw bytes, percent-encoded: b"\xff" -> %FF

    def image(self, path: Path, alt: str, cls: str = "") -> str:
        """A lazily loaded image that links to itself at full size."""
        cls = f' class="{cls}"' if cls else ""
        return f'<a href="{self.href(path)}"><img src="{self.href(path)}" alt="{_e(alt)}" loading="lazy"{cls}></a>'

    def audio(self, path: Path) -> str:
        # preload="none": dozens of players must not all fetch their WAV when the page opens
        return f'<audio controls preload="none" src="{self.href(path)}" title="{_e(path.name)}"></audio>'

    def link(self, path: Path, text: str | None = None) -> str:
        return f'<a href="{self.href(path)}">{_e(text or path.name)}</a>'


def _when(t: Any) -> str:
    t = _number(t)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else "unknown"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        text = json.dumps(v)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(v)


def _table(rows: list[tuple[str, str]]) -> str:
    """Rows of (escaped heading, ready HTML)."""
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _summary(run: Path, config: dict | None, log: list[dict], best: dict | None, page: _Page) -> str:
    data, train = (config or {}).get("data") or {}, (config or {}).get("train") or {}
    checkpoints = _stepped_files(run / "checkpoints", _CHECKPOINT_NAME)
    previews = _stepped_files(run / "previews", _PREVIEW_NAME)
    steps = [s for r in log if (s := _number(r.get("step"))) is not None]
    # a killed run's log can end before its last checkpoint or preview
    done = max(steps + [s for s, _ in checkpoints + previews], default=None)
    total = _number(train.get("steps"))
    progress = "unknown" if done is None else f"{int(done):,}"
    if total:
        progress += f" / {int(total):,}" + (f" ({100 * done / total:.0f} %)" if done is not None else "")
    rows = [("run folder", _e(os.path.abspath(run))),
            ("modality", _e(data.get("modality", "unknown"))),
            ("steps done", progress)]
    times = [t for r in log if (t := _number(r.get("time"))) is not None]
    if times:
        rows.append(("last log", _e(_when(times[-1])) + (f" ({_e(_duration(times[-1] - times[0]))} after the "
                                                         "first log line)" if len(times) > 1 else "")))
    if best:
        text = f"step {_fmt(best.get('step'))}, FID {_fmt(best.get('fid'))}"
        best_path = run / "checkpoints" / "best.pt"
        rows.append(("best checkpoint", page.link(best_path, text) if best_path.is_file() else _e(text)))
    if checkpoints:
        step, path = checkpoints[-1]
        rows.append(("checkpoints", f"{len(checkpoints)} kept, newest {page.link(path)} (step {step:,})"))
    files = [page.link(run / f) for f in ("config.json", "log.jsonl", "metrics.jsonl", "events.jsonl",
                                         "evaluation.json") if (run / f).is_file()]
    rows.append(("files", " · ".join(files)))
    return _table(rows)


def _curves(plots: list[tuple[str, Path]], best_step: float | None, page: _Page) -> str:
    parts = ['<section id="curves"><h2>Curves</h2>']
    if not plots:
        parts.append('<p class="note">No log lines yet.</p>')
    figures = []
    for title, path in plots:
        caption = _e(_PLOT_CAPTIONS.get(path.name, ""))  # the title is in the picture: the caption says more
        if path.name == "metrics.png" and best_step is not None:
            caption += f" Dashed line: the best checkpoint (step {best_step:,.0f})."
        figures.append(f"<figure>{page.image(path, title)}<figcaption>{caption}</figcaption></figure>")
    parts.append('<div class="plots">' + "".join(figures) + "</div>")
    parts.append('<p class="note">Non-finite values (NaN, inf) are left out of the curves; a faint red band marks '
                 'the log lines that held them (see <a href="#health">health</a>).</p></section>')
    return "\n".join(parts)


def _metrics(metrics: list[dict], evaluation: Any) -> str:
    parts = ['<section id="metrics"><h2>Latest metrics</h2>']
    if metrics:
        last = metrics[-1]
        about = [f"step {_fmt(last.get('step'))}"]
        if last.get("n") is not None:
            about.append(f"{_fmt(last['n'])} samples")
        if _number(last.get("seconds")) is not None:
            about.append(f"took {last['seconds']:.1f} s")
        if last.get("time") is not None:
            about.append(_when(last.get("time")))
        parts.append(f'<p class="note">{_e(", ".join(about))}; {len(metrics)} evaluations in all.</p>')
        parts.append(_table(_metric_rows(last, _metric_keys(last))))
    else:
        parts.append('<p class="note">No metrics.jsonl: the run has not been evaluated during training.</p>')
    if isinstance(evaluation, dict):
        shown = _metric_keys(evaluation, known_only=True)
        rows = _metric_rows(evaluation, shown)
        hidden = set(shown) | {k + s for k in shown for s in _SPREAD_SUFFIXES}
        rows += [(_e(k), _e(_fmt(v))) for k, v in evaluation.items()
                 if k not in hidden and (v is None or isinstance(v, (str, int, float, bool)))]
        parts.append("<h3>evaluation.json</h3>" + _table(rows))
    parts.append("</section>")
    return "\n".join(parts)


def _health(events: list[dict], log: list[dict], log_skipped: int) -> str:
    parts = ['<section id="health"><h2>Health events</h2>']
    if events:
        rows = "".join(
            f'<tr><td>{_e(_fmt(ev.get("step", "")))}</td><td>{_e(_when(ev.get("time")))}</td>'
            f'<td{_BAD if ev.get("kind") in ("non-finite", "stopped") else ""}>{_e(ev.get("kind", ""))}</td>'
            f'<td>{_e(ev.get("message", ""))}</td></tr>' for ev in events)
        parts.append(f"<table><tr><th>step</th><th>time</th><th>kind</th><th>message</th></tr>{rows}</table>")
    else:
        parts.append("<p>none</p>")
    bad = _non_finite(log)
    if bad:
        items = "".join(f"<li>step {_e(_fmt(step))}: {_e(', '.join(keys))}</li>" for step, keys in bad[:20])
        more = f"<li>... and {len(bad) - 20} more lines</li>" if len(bad) > 20 else ""
        lines = f"{len(bad)} line" + ("s" if len(bad) > 1 else "")
        parts.append(f'<p class="bad">Non-finite values in log.jsonl ({lines}):</p><ul>{items}{more}</ul>')
    if log_skipped:
        parts.append(f'<p class="note">{log_skipped} unreadable line(s) of log.jsonl skipped '
                     "(a run killed mid-write leaves a truncated last line).</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _previews(folder: Path, page: _Page) -> str:
    found = _stepped_files(folder, _PREVIEW_NAME)
    shown = _evenly_spaced(found, MAX_PREVIEWS)
    parts = ['<section id="previews"><h2>Previews</h2>']
    if not found:
        parts.append('<p class="note">No previews yet.</p>')
    else:
        note = "the same fixed noise at every step"
        if len(shown) < len(found):
            note += f"; {len(shown)} of {len(found)}, evenly spaced"
        parts.append(f'<p class="note">{_e(note)}.</p><div class="grid">')
        for step, png in shown:
            wav = png.with_suffix(".wav")
            player = page.audio(wav) if wav.is_file() else ""
            parts.append(f'<figure>{page.image(png, f"samples at step {step}", "px")}'
                         f"<figcaption>step {step:,}</figcaption>{player}</figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _sample_folders(run: Path) -> list[Path]:
    """RUN/samples, RUN/generated and every other folder `multigan generate` recorded for the run, once each."""
    recorded = _read_json(run / GENERATIONS)
    recorded = recorded.get("folders") if isinstance(recorded, dict) else None
    candidates = [run / name for name in _SAMPLE_FOLDERS]
    candidates += [run / f for f in recorded if isinstance(f, str)] if isinstance(recorded, list) else []
    folders, seen = [], set()
    for folder in candidates:  # a relative entry is taken from the run folder; absolute ones stay as they are
        key = os.path.realpath(folder)
        if key not in seen and folder.is_dir():
            seen.add(key)
            folders.append(folder)
    return folders


def _label_captions(record: Any) -> dict[int, str]:
    """Sample number -> "class k" from generation.json, for samples drawn one per label."""
    if not isinstance(record, dict) or record.get("interpolate") or not isinstance(record.get("labels"), list):
        return {}
    return {i: f"class {k}" for i, k in enumerate(record["labels"])}


def _about(record: dict) -> str:
    about = [f"{k} {_fmt(record[k])}" for k in ("step", "seed", "n", "truncation", "created")
             if record.get(k) is not None]
    if record.get("interpolate"):
        about.insert(0, f"{_fmt(record.get('walks'))} latent walks of {_fmt(record['interpolate'])} steps")
        if isinstance(record.get("labels"), list):
            about.append("rows of classes " + ", ".join(map(str, record["labels"])))
    return ", ".join(about)


def _samples(run: Path, page: _Page) -> str:
    parts = ['<section id="samples"><h2>Samples</h2>']
    folders = _sample_folders(run)
    if not folders:
        parts.append('<p class="note">No samples: write some with <code>multigan generate</code>.</p>')
    for folder in folders:
        try:
            name = folder.resolve().relative_to(run.resolve()).as_posix()
        except ValueError:  # written outside the run folder
            name = os.path.abspath(folder)
        parts.append(f"<h3>{_e(name)}/</h3>")
        record = _read_json(folder / "generation.json")
        captions = _label_captions(record)
        if isinstance(record, dict):
            parts.append(f'<p class="note">{_e(_about(record))}</p>')
        for grid in sorted(folder.glob("*-grid.png")):
            parts.append(f'<figure>{page.image(grid, f"{folder.name}: {grid.name}", "px wide")}'
                         f"<figcaption>{_e(grid.name)}</figcaption></figure>")
        wavs = sorted(folder.glob("*.wav"))
        # Audio runs: a player per clip with its spectrogram; image runs: the single PNGs when there is no grid.
        items = wavs or ([] if any(folder.glob("*-grid.png")) else
                         sorted(p for p in folder.glob("*.png") if not p.name.endswith("-grid.png")))
        if len(items) > MAX_CLIPS:
            parts.append(f'<p class="note">The first {MAX_CLIPS} of {len(items)} files.</p>')
        cells = []
        for item in items[:MAX_CLIPS]:
            png = item.with_suffix(".png")
            thumb = page.image(png, f"spectrogram of {item.name}" if wavs else item.name, "px") if png.is_file() else ""
            player = page.audio(item) if wavs else ""
            number = re.search(r"-(\d+)$", item.stem)
            caption = item.name + (f" · {captions[int(number.group(1))]}"
                                   if number and int(number.group(1)) in captions else "")
            cells.append(f"<figure>{thumb}<figcaption>{_e(caption)}</figcaption>{player}</figure>")
        if cells:
            parts.append('<div class="grid">' + "".join(cells) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _settings(path: Path, config: dict | None) -> str:
    if config is not None:
        text = json.dumps(config, indent=2)
    elif path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")  # unreadable as JSON: show it as it is
    else:
        text = "no config.json"
    return (f'<section id="settings"><h2>Settings</h2><details><summary>config.json</summary>'
            f"<pre>{_e(text)}</pre></details></section>")
