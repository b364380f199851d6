"""Piano rolls of token melodies, drawn like the paper's Figure 2 (Mittal et al. 2021).

Notes are horizontal bars, pitch against time in model bars (16 steps each, numbered from 0 as
`box_bars` counts them), with a line at every bar and a labelled tick every `bars_per_tick`
bars; or, given `barlines` (where a file's own bars begin, in steps, and their numbers, from
`melody.BarMap`), the file's bars in its meter, labelled with the numbers a musician reads
(every `bars_per_tick` bars from bar 1). The pitch axis spans the melody's range and a small
margin. An infilled region is a dashed red box over the full pitch range.

Everything is drawn on bare `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot: no global state, nothing to close, safe to call from a web server's worker threads.
`figure_png` and `figure_rgb` turn a figure into PNG bytes or an RGB array; Gradio's `gr.Plot`
takes the Figure itself.

Figure size is given in pixels at `dpi` (defaults: 1000 px wide at 100 dpi, what the app shows).
"""
from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from .melody import NO_EVENT, STEPS_PER_BAR, check_tokens, is_onset, token_to_pitch

NOTE_COLOR = "#1f4e8c"
NOTE_EDGE = "#0b2447"
BOX_COLOR = "#d62728"
PITCH_MARGIN = 2  # semitones of air above and below the melody
EMPTY_RANGE = (60, 72)  # pitch range shown for a melody without notes
MAX_MAJOR_TICKS = 32
MIN_TICK_PX = 26  # bar numbers at least this far apart, so a figure drawn for a phone stays legible
GLYPH_EM = 0.55  # an average glyph's width in ems, for breaking titles into lines that fit
NARROW_PX = 640  # a figure narrower than this is laid out for a phone
LINE_PX, TITLE_LINE_PX = 15, 18  # a wrapped label's and title's extra line, at 100 dpi
AXES_MARGIN_PX = 72  # the default margins left and right of the plot area (`_margins`)
MAX_BAR_LINES = 256
NOTE_GID = "notes"
BOX_GID = "infill-box"
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

Tokens = Sequence[int] | np.ndarray


# --- notes ------------------------------------------------------------------------------

def note_spans(tokens: Tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_step, end_step, pitch) arrays of the notes in a token melody.

    A note-on sounds until the next note-on or note-off, or to the end of the tokens, the same
    reading as `melody.tokens_to_score`.
    """
    tokens = np.asarray(tokens)
    check_tokens(tokens)
    events = np.flatnonzero(tokens != NO_EVENT)
    starts = events[is_onset(tokens[events])]
    nxt = np.searchsorted(events, starts, side="right")
    ends = np.where(nxt < len(events), events[np.minimum(nxt, len(events) - 1)], len(tokens))
    pitches = token_to_pitch(tokens[starts])
    return starts.astype(np.int64), ends.astype(np.int64), pitches


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> name with octave, middle C (60) = C4."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def pitch_range(*melodies: Tokens) -> tuple[int, int]:
    """Lowest and highest pitch over the melodies (EMPTY_RANGE when none has a note)."""
    per_melody = [note_spans(m)[2] for m in melodies]
    pitches = np.concatenate(per_melody) if per_melody else np.zeros(0, np.int64)
    if len(pitches) == 0:
        return EMPTY_RANGE
    return int(pitches.min()), int(pitches.max())


def shared_pitches(melodies: Sequence[Tokens], reach: int = 12) -> tuple[int, int]:
    """One pitch range for melodies drawn together: all their notes, but at most `reach`
    semitones beyond the first melody's range (a stray note of a random latent, e.g. at C8,
    would squash every row; it is drawn at the edge instead)."""
    lo, hi = pitch_range(*melodies)
    if not len(note_spans(melodies[0])[2]):
        return lo, hi
    a, b = pitch_range(melodies[0])
    return max(lo, a - reach), min(hi, b + reach)


def num_bars(tokens: Tokens) -> int:
    return max(1, math.ceil(len(tokens) / STEPS_PER_BAR))


# --- drawing ----------------------------------------------------------------------------

def draw_pianoroll(
    ax: Axes,
    tokens: Tokens,
    *,
    box_bars: tuple[int, int] | None = None,
    bars_per_tick: int = 4,
    pitches: tuple[int, int] | None = None,
    bars: int | None = None,
    label: str | None = None,
    color: str = NOTE_COLOR,
    show_xlabel: bool = True,
    fontsize: float = 9.0,
    barlines: tuple[Sequence[int], Sequence[int]] | None = None,
) -> Axes:
    """Draw one melody into `ax`: note bars, bar grid, pitch labels, optional infill box.

    `pitches` fixes the (low, high) pitch shown (default: the melody's range); `bars` fixes the
    x extent (default: the melody's length), so rows of different lengths can line up.
    """
    tokens = np.asarray(tokens)
    starts, ends, note_pitches = note_spans(tokens)
    lo, hi = pitches if pitches is not None else pitch_range(tokens)
    note_pitches = np.clip(note_pitches, lo - PITCH_MARGIN, hi + PITCH_MARGIN)  # a far note sits at the edge
    y0, y1 = lo - PITCH_MARGIN - 0.5, hi + PITCH_MARGIN + 0.5
    n_bars = bars if bars is not None else num_bars(tokens)

    # Notes: one rectangle each, all in one collection (fast to build and to draw).
    x0, x1 = starts / STEPS_PER_BAR, ends / STEPS_PER_BAR
    h = 0.42
    verts = np.stack([
        np.stack([x0, note_pitches - h], -1), np.stack([x0, note_pitches + h], -1),
        np.stack([x1, note_pitches + h], -1), np.stack([x1, note_pitches - h], -1),
    ], axis=1) if len(starts) else np.zeros((0, 4, 2))
    # matplotlib's stub asks for a Sequence; the (N, 4, 2) array is documented and takes the fast path
    notes = PolyCollection(
        verts, facecolors=color, edgecolors=NOTE_EDGE, linewidths=0.4, zorder=2, gid=NOTE_GID  # type: ignore[arg-type]
    )
    ax.add_collection(notes, autolim=False)
    ax.set_xlim(0, n_bars)
    ax.set_ylim(y0, y1)

    # Time axis: a labelled tick every `bars_per_tick` bars, a faint line at every bar.
    step = max(1, int(bars_per_tick))
    positions: np.ndarray  # bar starts, in bars
    numbers: np.ndarray  # the bars' numbers
    if barlines is None:
        positions, numbers = np.arange(n_bars + 1), np.arange(n_bars + 1)
    else:
        positions, numbers = np.asarray(barlines[0]) / STEPS_PER_BAR, np.asarray(barlines[1])
        keep = (positions >= 0) & (positions < n_bars)  # bars that begin in view (the frame closes the last)
        positions, numbers = positions[keep], numbers[keep]
    px_per_bar = axis_px(ax) / max(n_bars, 1)
    while step < len(positions) and (len(positions) / step > MAX_MAJOR_TICKS or step * px_per_bar < MIN_TICK_PX):
        step *= 2
    # (The lines are one LineCollection each, not minor ticks: matplotlib Tick objects cost
    # about 3 ms apiece, which made a 4-row figure take most of a second.)
    labelled = numbers % step == (0 if barlines is None else 1 % step)
    majors = positions[labelled]
    ax.set_xticks(majors, [str(n) for n in numbers[labelled]])
    minors = positions[~labelled] if len(positions) <= MAX_BAR_LINES else []
    across = blended_transform_factory(ax.transData, ax.transAxes)
    for xs, color, width in ((minors, "#dedede", 0.5), (majors, "#9a9a9a", 0.8)):
        if len(xs):
            ax.add_collection(LineCollection(
                [[(x, 0.0), (x, 1.0)] for x in xs], colors=color, linewidths=width,
                transform=across, zorder=0.5,
            ), autolim=False)

    # Pitch axis: C's labelled (C, E, G in a range without two C's), a faint line at each.
    ticks = [p for p in range(lo - PITCH_MARGIN, hi + PITCH_MARGIN + 1) if p % 12 == 0]
    if len(ticks) < 2:
        ticks = [p for p in range(lo - PITCH_MARGIN, hi + PITCH_MARGIN + 1) if p % 12 in (0, 4, 7)]
    ax.set_yticks(ticks, [pitch_name(p) for p in ticks])
    ax.grid(True, axis="y", which="major", color="#e6e6e6", linewidth=0.6, zorder=0)
    ax.tick_params(labelsize=fontsize - 1, length=2, pad=2)
    ax.set_axisbelow(True)

    if len(starts) == 0:
        ax.text(0.5, 0.5, "(no notes)", transform=ax.transAxes, ha="center", va="center",
                color="#888888", fontsize=fontsize)
    if box_bars is not None:
        draw_box(ax, box_bars, y0, y1)
    if label:
        ax.set_title(wrap(label, axis_px(ax), fontsize), loc="left", fontsize=fontsize, pad=3)
    if show_xlabel:
        ax.set_xlabel("bar", fontsize=fontsize - 1, labelpad=1)
    return ax


def draw_box(ax: Axes, box_bars: tuple[int, int], y0: float, y1: float) -> Rectangle:
    """Dashed red rectangle over bars [first, last) and the whole pitch range shown."""
    first, last = box_bars
    if not 0 <= first < last:
        raise ValueError(f"box_bars must be (first, last) with 0 <= first < last, got {box_bars}")
    box = Rectangle(
        (first, y0), last - first, y1 - y0, fill=False, edgecolor=BOX_COLOR, linestyle="--",
        linewidth=1.6, zorder=4, clip_on=False, gid=BOX_GID,
    )
    ax.add_patch(box)
    return box


def axis_px(ax: Axes) -> float:
    """The width of `ax`'s plot area in the figure's pixels."""
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    return float(ax.get_position().width * fig.get_figwidth() * fig.dpi)


def wrap(text: str, width_px: float, fontsize: float, dpi: int = 100) -> str:
    """`text` broken into lines that fit `width_px` at `fontsize` points: a figure drawn for a
    phone keeps its titles whole instead of running them off its edge."""
    per_line = max(12, int(width_px / (GLYPH_EM * fontsize * dpi / 72)))
    return "\n".join(textwrap.wrap(text, per_line)) or text


def extra_lines(texts: Sequence[str | None], width_px: float, fontsize: float, dpi: int = 100) -> int:
    """How many more lines than one the longest of `texts` takes when wrapped (`wrap`)."""
    return max((wrap(t, width_px, fontsize, dpi).count("\n") for t in texts if t), default=0)


def new_figure(width_px: int, height_px: int, dpi: int) -> Figure:
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, left=58, right=14, top=10, bottom=30, hspace_px=0, wspace_px=0,
             nrows=1, ncols=1) -> None:
    """subplots_adjust in pixels (constrained layout costs more time than the whole drawing)."""
    w, h = fig.get_size_inches() * fig.dpi
    ax_h = (h - top - bottom - hspace_px * (nrows - 1)) / nrows
    ax_w = (w - left - right - wspace_px * (ncols - 1)) / ncols
    fig.subplots_adjust(
        left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
        hspace=hspace_px / ax_h if nrows > 1 else 0.2, wspace=wspace_px / ax_w if ncols > 1 else 0.2,
    )


def plot_pianoroll(
    tokens: Tokens,
    ax: Axes | None = None,
    title: str | None = None,
    box_bars: tuple[int, int] | None = None,
    bars_per_tick: int = 4,
    *,
    pitches: tuple[int, int] | None = None,
    width_px: int = 1000,
    height_px: int = 240,
    dpi: int = 100,
    color: str = NOTE_COLOR,
    barlines: tuple[Sequence[int], Sequence[int]] | None = None,
) -> Figure:
    """One melody as a piano roll; draws into `ax` when given, else into a new figure.

    box_bars=(first_bar, last_bar_exclusive) marks an infilled region with a dashed red box.
    Returns the Figure.
    """
    if ax is not None:
        draw_pianoroll(ax, tokens, box_bars=box_bars, bars_per_tick=bars_per_tick,
                       pitches=pitches, label=title, color=color, barlines=barlines)
        fig = ax.figure
        return fig if isinstance(fig, Figure) else fig.figure  # an Axes of a SubFigure: its Figure
    lines = extra_lines([title], width_px - AXES_MARGIN_PX, 9.0, dpi)
    fig = new_figure(width_px, height_px + lines * LINE_PX, dpi)
    ax = fig.add_subplot(1, 1, 1)
    _margins(fig, top=24 + lines * LINE_PX if title else 10)
    draw_pianoroll(ax, tokens, box_bars=box_bars, bars_per_tick=bars_per_tick,
                   pitches=pitches, label=title, color=color, barlines=barlines)
    return fig


def plot_rows(
    rows: Sequence[tuple[str, Tokens]],
    box_bars: tuple[int, int] | None = None,
    bars_per_tick: int = 4,
    *,
    title: str | None = None,
    share_pitch: bool = True,
    width_px: int = 1000,
    row_height_px: int = 150,
    dpi: int = 100,
    barlines: tuple[Sequence[int], Sequence[int]] | None = None,
) -> Figure:
    """Several melodies stacked as labelled rows on one time axis, like Figure 2
    (original / diffusion / interpolation / prior). With `share_pitch` (the default) every row
    has one pitch axis, `shared_pitches`, so rows compare at a glance; the box, when given, is
    drawn on every row."""
    if not rows:
        raise ValueError("plot_rows needs at least one (label, tokens) row")
    n = len(rows)
    bars = max(num_bars(t) for _, t in rows)
    shared = shared_pitches([t for _, t in rows]) if share_pitch else None
    labels = extra_lines([label for label, _ in rows], width_px - AXES_MARGIN_PX, 9.0, dpi) * LINE_PX
    top = (40 + extra_lines([title], width_px, 11.0, dpi) * TITLE_LINE_PX if title else 22) + labels
    gap = 18 + labels
    fig = new_figure(width_px, top + 30 + n * row_height_px + (n - 1) * gap, dpi)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    _margins(fig, top=top, hspace_px=gap + 4, nrows=n)
    for i, (ax, (label, tokens)) in enumerate(zip(axes, rows, strict=True)):
        draw_pianoroll(ax, tokens, box_bars=box_bars, bars_per_tick=bars_per_tick,
                       pitches=shared, bars=bars, label=label, show_xlabel=i == n - 1, barlines=barlines)
        if i < n - 1:
            ax.tick_params(labelbottom=False)
    if title:
        fig.suptitle(wrap(title, width_px, 11.0, dpi), fontsize=11, y=1 - 6 / (fig.get_size_inches()[1] * dpi),
                     va="top")
    return fig


def plot_stages(
    stages: Sequence[tuple[str, Tokens]],
    ncols: int = 2,
    box_bars: tuple[int, int] | None = None,
    bars_per_tick: int = 8,
    *,
    title: str | None = None,
    width_px: int = 1000,
    panel_height_px: int = 120,
    dpi: int = 100,
) -> Figure:
    """Small multiples of a few refinement stages ("step 0/100", ...), read left to right,
    top to bottom, all on the same pitch and time axes so they compare at a glance."""
    if not stages:
        raise ValueError("plot_stages needs at least one (label, tokens) stage")
    n = len(stages)
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    bars = max(num_bars(t) for _, t in stages)
    shared = shared_pitches([t for _, t in stages])
    panel_px = (width_px - AXES_MARGIN_PX - 14 * (ncols - 1)) / ncols
    labels = extra_lines([label for label, _ in stages], panel_px, 8.5, dpi) * LINE_PX
    top = (40 + extra_lines([title], width_px, 11.0, dpi) * TITLE_LINE_PX if title else 22) + labels
    fig = new_figure(width_px, top + 30 + nrows * panel_height_px + (nrows - 1) * (18 + labels), dpi)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    _margins(fig, top=top, hspace_px=22 + labels, wspace_px=14, nrows=nrows, ncols=ncols)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        label, tokens = stages[k]
        last_row = k + ncols >= n
        draw_pianoroll(ax, tokens, box_bars=box_bars, bars_per_tick=bars_per_tick,
                       pitches=shared, bars=bars, label=label, show_xlabel=last_row, fontsize=8.5)
        # sharex hides the tick labels of all but the bottom row of the grid; a panel with
        # none below it (a short last row) needs them back.
        ax.tick_params(labelbottom=last_row)
        if k % ncols:
            ax.tick_params(labelleft=False)
    if title:
        fig.suptitle(wrap(title, width_px, 11.0, dpi), fontsize=11, y=1 - 6 / (fig.get_size_inches()[1] * dpi),
                     va="top")
    return fig


# --- latents ----------------------------------------------------------------------------

LATENT_CMAP = "RdBu_r"
LATENT_LIMIT = 3.0  # the colour scale's ends, in model-space units (the data's std is about 1)


def draw_latents(ax: Axes, latents: np.ndarray, *, bars: int | None = None, label: str | None = None,
                 fontsize: float = 9.0, limit: float = LATENT_LIMIT) -> Axes:
    """A melody's latents (chunks, dims) as an image: one column per 2-bar chunk, under the bars
    it encodes, its dims top to bottom, blue below 0, red above. Pure noise is speckle; a melody's
    latents show rows that run across chunks (what its phrases share) and repeated columns."""
    x = np.asarray(latents, dtype=np.float32)
    k, d = x.shape
    ax.imshow(x.T, aspect="auto", cmap=LATENT_CMAP, vmin=-limit, vmax=limit, interpolation="nearest",
              extent=(0, 2 * k, d, 0))
    ax.set_xlim(0, bars if bars is not None else 2 * k)
    if k > 1:
        ax.add_collection(LineCollection([[(2 * c, 0), (2 * c, d)] for c in range(1, k)], colors="white",
                                         linewidths=1.0), autolim=False)
    ax.set_yticks([])
    ax.set_ylabel(f"{d} dims", fontsize=fontsize - 1.5, labelpad=2)
    ax.set_xticks([])
    ax.tick_params(labelsize=fontsize - 1, length=2, pad=2)
    if label:
        ax.set_title(wrap(label, axis_px(ax), fontsize), loc="left", fontsize=fontsize, pad=3)
    return ax


def plot_latent_rolls(
    panels: Sequence[tuple[str, np.ndarray, Tokens]],
    ncols: int = 1,
    *,
    title: str | None = None,
    pitches: tuple[int, int] | None = None,
    width_px: int = 1000,
    panel_height_px: int = 230,
    dpi: int = 100,
    fontsize: float = 9.0,
) -> Figure:
    """Panels of (label, latents (chunks, dims), tokens): each the latents as an image
    (`draw_latents`) over the melody they decode to, on one time axis, all panels on one pitch
    axis (`pitches`, default `shared_pitches` of the panels), read left to right, top to bottom."""
    if not panels:
        raise ValueError("plot_latent_rolls needs at least one panel")
    n = len(panels)
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    shared = pitches or shared_pitches([t for _, _, t in panels])
    bars = max(max(num_bars(t), 2 * len(x)) for _, x, t in panels)
    panel_px = (width_px - AXES_MARGIN_PX - 16 * (ncols - 1)) / ncols
    labels = extra_lines([label for label, _, _ in panels], panel_px, fontsize, dpi) * LINE_PX
    titled = 22 + extra_lines([title], width_px, fontsize + 2, dpi) * TITLE_LINE_PX if title else 0
    top = 24 + titled + labels  # room for the title and the first panel's label
    gap = 40 + labels  # room for a panel's bar numbers and the next panel's label
    fig = new_figure(width_px, top + 30 + nrows * panel_height_px + (nrows - 1) * gap, dpi)
    _margins(fig, top=top)
    outer = fig.add_gridspec(nrows, ncols, hspace=gap / panel_height_px, wspace=16 * ncols / width_px)
    for k, (label, latents, tokens) in enumerate(panels):
        r, c = divmod(k, ncols)
        inner = outer[r, c].subgridspec(2, 1, height_ratios=[0.45, 0.55], hspace=0.06)
        ax_lat = fig.add_subplot(inner[0])
        ax_roll = fig.add_subplot(inner[1])
        draw_latents(ax_lat, latents, bars=bars, label=label, fontsize=fontsize)
        draw_pianoroll(ax_roll, tokens, pitches=shared, bars=bars, bars_per_tick=4 if ncols == 1 else 8,
                       show_xlabel=r == nrows - 1, fontsize=fontsize)
        if c:
            ax_lat.tick_params(labelleft=False)
            ax_roll.tick_params(labelleft=False)
    if title:
        fig.suptitle(wrap(title, width_px, fontsize + 2, dpi), fontsize=fontsize + 2,
                     y=1 - 6 / (fig.get_size_inches()[1] * dpi), va="top")
    return fig


def plot_restoration(
    curves: Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[float], float]],
    *,
    title: str | None = None,
    width_px: int = 1000,
    height_px: int = 320,
    dpi: int = 100,
) -> Figure:
    """Does a reverse run bring a noised melody back? For each melody (label, start steps, the
    noisy start's agreement with it, the run's end's agreement, the VAE's own agreement): the end
    as a solid line, the start dashed, the VAE's reconstruction dotted (a run that found the
    melody's latents exactly). Narrower than `NARROW_PX`, the legend goes under the plot."""
    narrow = width_px < NARROW_PX
    legend_px = 14 * 3 * len(curves) + 10 if narrow else 0
    title = wrap(title, width_px - 80, 10.0, dpi) if title else None
    top = 18 + 15 * (title.count("\n") + 1) if title else 10
    fig = new_figure(width_px, height_px + legend_px + top - 28, dpi)
    ax = fig.add_subplot(1, 1, 1)
    _margins(fig, left=64, right=14 if narrow else 230, top=top, bottom=40 + legend_px)
    colors = ("#1f4e8c", "#b45309", "#2e7d32", "#6b21a8", "#c2185b", "#455a64")
    for (label, starts, noisy, restored, vae), color in zip(curves, colors * 4, strict=False):
        ax.plot(starts, restored, "-o", color=color, markersize=3.5, linewidth=1.6, label=f"{label}: end of run")
        ax.plot(starts, noisy, "--", color=color, linewidth=1.0, label="    noisy start")
        ax.axhline(vae, color=color, linestyle=":", linewidth=1.0, label="    the VAE's own")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("the noise step the run starts from", fontsize=9)
    ax.set_ylabel("sixteenths like the melody", fontsize=9)
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.tick_params(labelsize=8)
    if narrow:
        ax.legend(loc="upper left", bbox_to_anchor=(-0.15, -40 / (height_px - 68)), fontsize=7.5, frameon=False)
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7.5, frameon=False)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    return fig


# --- output -----------------------------------------------------------------------------

def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """PNG bytes of a figure (at its own dpi unless given)."""
    buf = io.BytesIO()
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an (height, width, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path, dpi: int | None = None):
    """Write a figure as PNG; returns the path."""
    from .atomic import write_bytes

    return write_bytes(path, figure_png(fig, dpi))
