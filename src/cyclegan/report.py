"""``cyclegan report RUN``: one HTML page about a training run that opens from disk with no server.

Reads only the run directory's artefacts (``config.json``, ``log.jsonl``, ``metrics.jsonl``,
``eval*.json``, ``samples/``) and writes ``report.html`` plus its plots as PNGs in
``report_files/``; sample grids are linked where they already are (relative paths). With
``embed=True`` every image is inlined as a base64 data URI instead, giving one portable file.

Contents: run summary, smoothed loss curves, learning rate, throughput, metric curves from
``--eval-every``, ``eval.json`` tables, sample grids by epoch, hardware/throughput facts from the
log, and the resolved config.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from cyclegan.errors import EvaluationError, RunDirError
from cyclegan.fileio import write_bytes_atomic, write_text_atomic
from cyclegan.version import __version__

__all__ = ["RunLog", "build_report", "ema", "read_run_log"]

# Loss panels: which logged keys share a plot. Keys not named here go to "other".
LOSS_PANELS = {
    "generator total": ("G_total",),
    "adversarial (generators)": ("G_A_gan", "G_B_gan"),
    "cycle and identity": ("cycle_A", "cycle_B", "idt_A", "idt_B"),
    "discriminators": ("D_A", "D_B", "gp_A", "gp_B"),
}
_NOT_LOSSES = {"step", "epoch", "lr", "img_per_s", "time", "event"}


# ------------------------------------------------------------------------------------- reading


@dataclass
class RunLog:
    losses: list[dict] = field(default_factory=list)  # periodic loss records, superseded steps dropped
    events: list[dict] = field(default_factory=list)  # start / resume / epoch_end / stop / eval ...
    metrics: list[dict] = field(default_factory=list)  # --eval-every records
    bad_lines: int = 0


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    records, bad = [], 0
    if not path.is_file():
        return records, bad
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut short by a kill mid-write
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad


def read_run_log(run: Path) -> RunLog:
    """Parse ``log.jsonl`` (and ``metrics.jsonl``). After a ``resume`` at step s, records from the
    interrupted segment with step > s are dropped: the resumed run recomputed those steps."""
    records, bad = _read_jsonl(run / "log.jsonl")
    log = RunLog(bad_lines=bad)
    for rec in records:
        event = rec.get("event")
        if event == "resume":
            s = rec.get("step", 0)
            log.losses = [r for r in log.losses if r.get("step", 0) <= s]
            log.metrics = [r for r in log.metrics if r.get("step", 0) <= s]
        if event == "eval" or "selection_metric" in rec:  # --eval-every records, tagged or not
            log.metrics.append(rec)
        elif event is not None:
            log.events.append(rec)
        elif "step" in rec:
            log.losses.append(rec)
    metrics, bad_m = _read_jsonl(run / "metrics.jsonl")
    if metrics:  # the dedicated file is authoritative when present
        log.metrics = metrics
        log.bad_lines += bad_m
    return log


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (the first points are not pulled to 0)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = weight * acc + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out.append(acc / norm)
    return out


# ------------------------------------------------------------------------------------- plotting


def _figure(n_panels: int, *, cols: int = 2, height: float = 3.0):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # the eval extra
        from matplotlib.figure import Figure
    except ImportError:
        raise EvaluationError(
            "matplotlib is not installed; the report needs it: pip install 'cyclegan[eval]'")
    cols = min(cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(5.2 * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "step" in r:
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def _loss_plot(losses: list[dict], smoothing: float) -> bytes | None:
    keys = sorted({k for r in losses for k, v in r.items()
                   if k not in _NOT_LOSSES and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not keys:
        return None
    panels = {name: [k for k in members if k in keys] for name, members in LOSS_PANELS.items()}
    named = {k for members in panels.values() for k in members}
    panels["other"] = [k for k in keys if k not in named]
    panels = {name: members for name, members in panels.items() if members}
    fig, axes = _figure(len(panels))
    for ax, (name, members) in zip(axes, panels.items()):
        for key in members:
            xs, ys = _series(losses, key)
            line = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)[0]
            ax.plot(xs, ema(ys, smoothing), color=line.get_color(), label=key)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def _single_plot(records: list[dict], key: str, *, title: str, ylabel: str,
                 smoothing: float = 0.0) -> bytes | None:
    xs, ys = _series(records, key)
    if not xs:
        return None
    fig, (ax,) = _figure(1, height=2.8)
    if smoothing:
        line = ax.plot(xs, ys, alpha=0.3, linewidth=0.8)[0]
        ax.plot(xs, ema(ys, smoothing), color=line.get_color())
    else:
        ax.plot(xs, ys)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _png(fig)


_METRIC_ORDER = ("fid", "kid", "is", "gms", "cycle_l1", "psnr", "ssim")


def _metric_families(metrics: list[dict]) -> dict[str, list[str]]:
    """fid_a2b / fid_b2a / fid_avg -> {"fid": [...]}: one panel per metric, one line per direction.

    ``kid_mean_a2b`` joins ``kid_avg`` under "kid"; standard deviations (``*_std_*``) are not plotted.
    """
    families: dict[str, list[str]] = {}
    skip = {"step", "epoch", "selection_value", "eval_seconds"}
    for r in metrics:
        for k, v in r.items():
            if k in skip or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            base = k
            for suffix in ("_a2b", "_b2a", "_avg"):
                base = base.removesuffix(suffix)
            if base.endswith("_std"):
                continue
            base = base.removesuffix("_mean")
            members = families.setdefault(base, [])
            if k not in members:
                members.append(k)
    rank = {name: i for i, name in enumerate(_METRIC_ORDER)}
    return dict(sorted(families.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _metrics_plot(metrics: list[dict]) -> bytes | None:
    families = _metric_families(metrics)
    if not families:
        return None
    fig, axes = _figure(len(families), cols=3, height=2.8)
    for ax, (base, keys) in zip(axes, families.items()):
        for key in sorted(keys):
            xs, ys = _series(metrics, key)
            style = {"color": "black", "linestyle": "--"} if key.endswith("_avg") else {}
            ax.plot(xs, ys, marker="o", markersize=3, label=key, **style)
        ax.set_title(base, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------------------------- summary


def _segments(events: list[dict]) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of each training session (start/resume ... stop)."""
    spans, begin, last = [], None, None
    for e in events:
        t = e.get("time")
        if not isinstance(t, (int, float)):
            continue
        if e.get("event") in ("start", "resume"):
            if begin is not None and last is not None:
                spans.append((begin, last))  # a session killed without a stop record
            begin = t
        last = t
        if e.get("event") == "stop" and begin is not None:
            spans.append((begin, t))
            begin = None
    if begin is not None and last is not None and last > begin:
        spans.append((begin, last))
    return spans


def _duration(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _facts(config: dict, log: RunLog) -> list[tuple[str, str]]:
    starts = [e for e in log.events if e.get("event") in ("start", "resume")]
    stops = [e for e in log.events if e.get("event") == "stop"]
    train = config.get("train", {}) if isinstance(config, dict) else {}
    data = config.get("data", {}) if isinstance(config, dict) else {}
    facts: list[tuple[str, str]] = []
    if stops:
        facts.append(("status", f"{stops[-1].get('status', '?')} at step {stops[-1].get('step', '?')}"))
    elif log.losses:
        facts.append(("status", f"running or killed; last logged step {log.losses[-1].get('step')}"))
    epochs = [e["epoch"] for e in log.events if e.get("event") == "epoch_end" and "epoch" in e]
    facts.append(("epochs completed", f"{max(epochs) if epochs else 0} of {train.get('epochs', '?')}"))
    if starts:
        devices = sorted({str(e.get("device")) for e in starts if e.get("device")})
        facts.append(("device", ", ".join(devices) or "?"))
        first = starts[0]
        if "images_a" in first:
            facts.append(("training images", f"A {first.get('images_a')}, B {first.get('images_b')}"))
    facts.append(("sessions", str(len(starts))))
    spans = _segments(log.events)
    if spans:
        facts.append(("wall time", _duration(sum(b - a for a, b in spans))))
    rates = [r["img_per_s"] for r in log.losses if isinstance(r.get("img_per_s"), (int, float))]
    if rates:
        facts.append(("throughput",
                      f"median {statistics.median(rates):.1f} img/s, last {rates[-1]:.1f} img/s"))
    facts.append(("batch size", str(train.get("batch_size", "?"))))
    facts.append(("precision", str(train.get("precision", "?"))))
    facts.append(("channels_last / compile",
                  f"{train.get('channels_last', '?')} / {train.get('compile', '?')}"))
    facts.append(("data loader workers", str(data.get("num_workers", "?"))))
    facts.append(("crop size", str(data.get("crop_size", "?"))))
    if log.bad_lines:
        facts.append(("unreadable log lines", str(log.bad_lines)))
    return facts


# ------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f5f5f5; text-align: left; } img { max-width: 100%; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .8em; }
.muted { color: #777; }
"""


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    return "" if v is None else str(v)


def _eval_table(record: dict) -> str:
    keys = ["fid", "kid_mean", "kid_std", "is_mean", "is_std", "gms", "cycle_l1", "psnr", "ssim"]
    dirs = [d for d in ("a2b", "b2a") if isinstance(record.get(d), dict)]
    present = [k for k in keys if any(k in record[d] for d in dirs)]
    head = "<tr><th>direction</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in present) + "</tr>"
    rows = "".join(
        f"<tr><th>{d}</th>" + "".join(f"<td>{_fmt(record[d].get(k))}</td>" for k in present) + "</tr>"
        for d in dirs
    )
    summary = record.get("summary") or {}
    extra = ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items())
    note = ""
    if record.get("inception_error"):
        note = f"<p class='muted'>FID/KID/IS not computed: {html.escape(str(record['inception_error']))}</p>"
    feats = record.get("features") or {}
    src = f"<p class='muted'>features: {html.escape(str(feats.get('library', 'none')))}</p>" if feats else ""
    return f"<table>{head}{rows}</table><p>{html.escape(extra)}</p>{note}{src}"


def _sample_choice(samples: list[Path], max_samples: int) -> list[Path]:
    if max_samples <= 0 or len(samples) <= max_samples:
        return samples
    # Evenly spaced, always keeping the first and the last grid.
    idx = sorted({round(i * (len(samples) - 1) / (max_samples - 1)) for i in range(max_samples)})
    return [samples[i] for i in idx]


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def build_report(
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    embed: bool = False,
    smoothing: float = 0.9,
    max_samples: int = 24,
) -> Path:
    """Write the HTML report of ``run_dir`` (default ``<run>/report.html``) and return its path.

    ``embed`` inlines every image (one portable file); otherwise plots go to ``<out stem>_files/`` and
    sample grids are linked relative to the page. ``max_samples`` caps the sample grids shown
    (evenly spaced; 0 = all).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    if not (run / "log.jsonl").is_file() and not (run / "config.json").is_file():
        raise RunDirError(f"{run}: not a run directory (no log.jsonl or config.json)")
    if not 0.0 <= smoothing < 1.0:
        raise EvaluationError(f"--smoothing must be in [0, 1), got {smoothing}")
    out = Path(out) if out else run / "report.html"
    assets = out.parent / f"{out.stem}_files"

    config: dict = {}
    if (run / "config.json").is_file():
        try:
            config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunDirError(f"{run / 'config.json'}: unreadable ({e})") from None
    log = read_run_log(run)

    def image_ref(name: str, data: bytes | None) -> str | None:
        if data is None:
            return None
        if embed:
            return _data_uri(data)
        write_bytes_atomic(assets / name, data)
        return html.escape(f"{assets.name}/{name}")

    plots = {
        "losses": image_ref("losses.png", _loss_plot(log.losses, smoothing)),
        "lr": image_ref("lr.png", _single_plot(log.losses, "lr", title="learning rate", ylabel="lr")),
        "throughput": image_ref(
            "throughput.png",
            _single_plot(log.losses, "img_per_s", title="throughput", ylabel="images / s",
                         smoothing=smoothing),
        ),
        "metrics": image_ref("metrics.png", _metrics_plot(log.metrics)),
    }

    name = html.escape(run.resolve().name)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CycleGAN run {name}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>CycleGAN run <code>{name}</code></h1>",
        (f"<p class='muted'>{html.escape(str(run.resolve()))} &middot; report by cyclegan {__version__} "
         f"on {time.strftime('%Y-%m-%d %H:%M')}</p>"),
        "<h2>Summary</h2>",
        _table(_facts(config, log)),
        "<h2>Losses</h2>",
    ]
    if plots["losses"]:
        parts.append(f"<figure><img src='{plots['losses']}' alt='loss curves'><figcaption>faint: logged "
                     "values; solid: exponential moving average (weight "
                     f"{smoothing:g})</figcaption></figure>")
    else:
        parts.append("<p class='muted'>no loss records in log.jsonl yet</p>")
    for key, title in (("lr", "Learning rate"), ("throughput", "Throughput")):
        if plots[key]:
            parts.append(f"<h2>{title}</h2><figure><img src='{plots[key]}' alt='{title.lower()}'></figure>")

    parts.append("<h2>Metrics</h2>")
    if plots["metrics"]:
        parts.append(f"<figure><img src='{plots['metrics']}' alt='metric curves'><figcaption>from "
                     "--eval-every (metrics.jsonl)</figcaption></figure>")
    evals = sorted(run.glob("eval*.json"))
    for path in evals:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            parts.append(f"<p class='muted'>{html.escape(path.name)}: unreadable</p>")
            continue
        step = record.get("step")
        parts.append(
            f"<h3>{html.escape(path.name)} (step {html.escape(str(step))})</h3>{_eval_table(record)}")
    if not plots["metrics"] and not evals:
        parts.append("<p class='muted'>no metrics yet: train with --eval-every N or run "
                     f"<code>cyclegan evaluate --checkpoint {html.escape(str(run))}</code></p>")

    parts.append("<h2>Samples</h2><p class='muted'>rows: real A, fake B, reconstructed A, real B, fake A, "
                 "reconstructed B</p>")
    samples = sorted((run / "samples").glob("*.png")) if (run / "samples").is_dir() else []
    chosen = _sample_choice(samples, max_samples)
    for path in chosen:
        src = _data_uri(path.read_bytes()) if embed else Path(os.path.relpath(path, out.parent)).as_posix()
        parts.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(path.stem)}' loading='lazy'>"
                     f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")
    if not samples:
        parts.append("<p class='muted'>no sample grids</p>")
    elif len(chosen) < len(samples):
        parts.append(f"<p class='muted'>{len(chosen)} of {len(samples)} grids shown (--max-samples)</p>")

    parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(config, indent=2), quote=False) + "</pre>")
    parts.append("</body></html>\n")
    write_text_atomic(out, "\n".join(parts))
    return out
