"""The docs tell the truth: README.md, ARCHITECTURE.md, docs/ and every model card agree with the
committed figures and commands, and cite nothing outside the repository. The README is the
user's short guide and quotes what it likes; whatever it quotes must be true, and the full
tables live in docs/, where they are checked the same way.

Every figure is read from the committed files, never written into this test, so a new model
or a new evaluation only needs its docs updated:
- every row of Table 1 (`eval/unconditional.json`, `eval/infill.json`) and of the fidelity and
  coherence tables (`eval/fidelity.json`, `eval/coherence.json`) that a doc quotes must show the
  JSON's figures at the precision printed (column by column, by the table's header), and
  docs/evaluation.md must quote every one of them; the paper's figures in brackets must be the paper's;
- the README's quality table against the pooled fidelity (`eval/fidelity-seeds.md`), the
  coherence of today's samples (`eval/coherence-floor-seed*/`) and Table 1; every time in its
  speed table is in the doc the row names;
- the VAE's figures against `checkpoints/musicvae-mel2bar-small/metrics.json`, the latent
  models' steps and parameter counts against their `config.json` and weights;
- the training command of every card appears in docs/models.md;
- the README stays short and shows the two commands (`python app.py`, the tests) that .ci/run
  and a newcomer use;
- the examples of the README and docs/ write only where git ignores it (or outside the checkout);
- no docstring or doc cites a file outside the repository (the old "REFERENCE sec. N"), every
  "paper_notes sec. N" and "paper sec. N" names a section that exists, every upstream file a
  docstring names is listed in docs/paper_notes.md, every relative link and every file
  ARCHITECTURE.md names exists.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
NOTES = REPO / "docs" / "paper_notes.md"
EVALUATION_DOC = REPO / "docs" / "evaluation.md"  # the full tables of both diffusion models
MODELS_DOC = REPO / "docs" / "models.md"  # the models' figures, design and training commands
GUIDES = [README, *sorted((REPO / "docs").glob("*.md"))]  # what a user reads, examples included
README_MAX_WORDS = 2200
ARCHITECTURE = REPO / "ARCHITECTURE.md"
CARDS = sorted(REPO.glob("checkpoints/*/README.md"))
EVAL = REPO / "eval"
VAE_DIR = REPO / "checkpoints" / "musicvae-mel2bar-small"
LATENT_MODELS = [d for d in sorted((REPO / "checkpoints").iterdir()) if (d / "config.json").is_file()
                 and "codec" in json.loads((d / "config.json").read_text())]


def docs() -> list[Path]:
    """Every markdown file we write (not test data)."""
    found = [README, ARCHITECTURE, *sorted((REPO / "docs").glob("*.md")), *CARDS, *sorted(EVAL.rglob("*.md")),
             *sorted(REPO.glob("data/*.md")), *sorted(REPO.glob("assets/*.md"))]
    return [p for p in found if p.is_file()]


def sources() -> list[Path]:
    """Every Python file of ours: the package, the app, scripts, benchmarks, tests."""
    files = [REPO / "app.py", *sorted((REPO / "symdiff").glob("*.py")), *sorted((REPO / "scripts").glob("*.py")),
             *sorted((REPO / "bench").glob("*.py")), *sorted((REPO / "tests").glob("*.py"))]
    return [p for p in files if p.is_file()]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- markdown tables -------------------------------------------------------------------------

def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, body rows) of every pipe table in a markdown text."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):  # also a table indented inside a list item
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2 and set("".join(block[1])) <= set("-: "):
            out.append((block[0], block[2:]))
        block = []
    return out


def label(cell: str) -> str:
    return cell.replace("**", "").strip()


NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")  # not the 32 of "fp32"


def printed(cell: str) -> list[tuple[float, float]]:
    """The numbers of a cell with the tolerance of their printed precision; a percentage as a
    share (1.4% -> 0.014)."""
    out = []
    for m in NUMBER.finditer(cell):
        text = m.group().replace(",", "")
        decimals = len(text.split(".")[1]) if "." in text else 0
        value, tol = float(text), 0.5 * 10.0 ** -decimals + 1e-9
        if cell[m.end():m.end() + 1] == "%":
            value, tol = value / 100, tol / 100
        out.append((value, tol))
    return out


def agrees(cell: str, expected: list[float]) -> bool:
    got = printed(cell)
    return len(got) >= len(expected) and all(abs(v - e) <= t for (v, t), e in zip(got, expected, strict=False))


# --- what the committed evaluation says -------------------------------------------------------

def load(name: str, folder: Path = EVAL) -> dict:
    return json.loads((folder / name).read_text())


def eval_dir(doc: Path) -> Path:
    """Where a doc's figures come from: eval/ holds the default model's evaluation, and
    eval/NAME/ that of the model in checkpoints/NAME, or the Table 1 folder a card names as its
    source (the MDN card quotes the evaluation it was part of)."""
    if doc.parent.parent == EVAL:  # eval/NAME/*.md
        return doc.parent
    if doc.parent.parent.name != "checkpoints":
        return EVAL
    own = EVAL / doc.parent.name
    named = [EVAL / n for n in re.findall(r"eval/([\w-]+)/", doc.read_text())
             if (EVAL / n / "unconditional.json").is_file()]
    return own if own.is_dir() else named[0] if named else EVAL


def table1_rows(folder: Path = EVAL) -> dict[str, dict[str, list[float]]]:
    """"unconditional: diffusion" -> {column title: [value(s)]} from eval/{unconditional,infill}.json."""
    rows = {}
    for task in ("unconditional", "infill"):
        if not (folder / f"{task}.json").is_file():
            continue
        ev = load(f"{task}.json", folder)
        for name, r in ev["rows"].items():
            rows[f"{task}: {name}"] = {
                "pitch C": [r["pitch"]["consistency"]], "pitch Var": [r["pitch"]["variance"]],
                "duration C": [r["duration"]["consistency"]], "duration Var": [r["duration"]["variance"]],
                "latent FD": [r["fd"]], "latent MMD": [r["mmd"]],
                "longest copy (bars)": [r["copy"]["longest_mean"], r["copy"]["longest_max"]],
                "copies >= 8 bars": [r["copy"]["share_copying"]],
            }
    return rows


def paper_rows() -> dict[str, tuple[float, ...]]:
    """The paper's Table 1 as the committed evaluation carries it (its figures in brackets)."""
    out = {}
    for task in ("unconditional", "infill"):
        for name, vals in load(f"{task}.json", EVAL / "diffusion-cpu")["paper"].items():
            out[f"{task}: {name}"] = tuple(vals)
    return out


def fit_rows(folder: Path = EVAL) -> dict[str, dict[str, list[float]]]:
    """Fidelity ("folk: diffusion (replace)") and coherence ("diffusion samples") rows by column title."""
    from symdiff.evaluation.fidelity import COHERENCE, FIT

    rows = {}
    for task, cols, count in (("fidelity", FIT, "pieces"), ("coherence", COHERENCE, "melodies")):
        path = folder / f"{task}.json"
        if not path.is_file():
            continue
        for group, g in json.loads(path.read_text())["groups"].items():
            for name, r in g["rows"].items():
                key = f"{group}: {name}" if task == "fidelity" else name
                rows[key] = {count: [r["n"]], **{title: [r["mean"][k]] for k, title in cols.items()
                                                 if k in r["mean"]}}  # evaluations before a figure was added
    return rows


def quoted_rows(path: Path, expected: dict[str, dict[str, list[float]]]):
    """(label, column title, cell, expected values) of every cell of a known row that `path` quotes."""
    for cells in quoted_tables(path, expected):
        yield from cells


def quoted_tables(path: Path, expected: dict[str, dict[str, list[float]]]):
    """Per table of `path`: [(label, column title, cell, expected values)] of every cell of a known row."""
    for header, body in tables(path.read_text()):
        cells = []
        for row in body:
            name = label(row[0])
            if name not in expected:
                continue
            for title, cell in zip(header[1:], row[1:], strict=False):
                if title in expected[name]:
                    cells.append((name, title, cell, expected[name][title]))
        yield cells


@pytest.mark.parametrize("path", [d for d in docs() if d != NOTES], ids=rel)  # the notes quote the paper's
def test_quoted_evaluation_rows_are_the_committed_ones(path):
    """Every table that quotes evaluation rows is, cell for cell, one committed evaluation: the
    doc's own (`eval_dir`), or for the README and docs/ (docs/evaluation.md shows both models'
    Table 1), eval/ or eval/diffusion-cpu/."""
    folders = [eval_dir(path)] + ([EVAL, EVAL / "diffusion-cpu"] if path in GUIDES else [])
    expected = [{**table1_rows(f), **fit_rows(f)} for f in folders]
    per_folder = [list(quoted_tables(path, e)) for e in expected]
    wrong = []
    for i in range(len(per_folder[0])):
        tries = [[f"{name!r} {title}: the doc says {cell!r}, {rel(folder)} has {vals}"
                  for name, title, cell, vals in cells[i] if not agrees(cell, vals)]
                 for folder, cells in zip(folders, per_folder, strict=True)]
        if all(tries):
            wrong += tries[0]
    assert not wrong, f"{rel(path)} disagrees with the committed evaluations:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", docs(), ids=rel)
def test_bracketed_figures_are_the_papers(path):
    paper = paper_rows()
    titles = ("pitch C", "pitch Var", "duration C", "duration Var")
    wrong = []
    for header, body in tables(path.read_text()):
        for row in body:
            name = label(row[0])
            for title, cell in zip(header[1:], row[1:], strict=False):
                m = re.search(r"\(([\d.]+)\)", cell)
                if name in paper and title in titles and m and float(m.group(1)) != paper[name][titles.index(title)]:
                    wrong.append(f"{name!r} {title}: ({m.group(1)}), the paper {paper[name][titles.index(title)]}")
    assert not wrong, f"{rel(path)}:\n" + "\n".join(wrong)


def test_paper_notes_table_1_is_the_one_the_evaluation_uses():
    paper = {k.replace("infill: ", "infilling: "): v for k, v in paper_rows().items()}
    seen = 0
    for header, body in tables(NOTES.read_text()):
        if header[:2] != ["setting", "pitch C"]:
            continue
        for row in body:
            if label(row[0]) in paper:
                assert tuple(float(c) for c in row[1:5]) == paper[label(row[0])], row
                seen += 1
    assert seen == len(paper), "docs/paper_notes.md sec. 8 must list every row of the paper's Table 1"


def test_evaluation_doc_quotes_every_committed_evaluation_row():
    """docs/evaluation.md holds the full tables: every row of the default model's evaluation, and
    of the paper-architecture model's Table 1."""
    paper_architecture = EVAL / "diffusion-cpu"
    for folder, expected in ((EVAL, {**table1_rows(), **fit_rows()}),
                             (paper_architecture, table1_rows(paper_architecture))):
        quoted = {name for cells in quoted_tables(EVALUATION_DOC, expected)
                  for name, title, cell, vals in cells if agrees(cell, vals)}
        missing = sorted(set(expected) - quoted)
        assert not missing, f"docs/evaluation.md does not show these rows of {rel(folder)}/*.json: {missing}"


def test_every_card_quoting_table_1_quotes_the_committed_rows():
    """A card that shows Table 1 rows shows today's: a card written at shipping time must not
    keep an older model's figures (the MDN card once kept the first diffusion model's)."""
    for card in CARDS:
        for name, title, cell, vals in quoted_rows(card, table1_rows(eval_dir(card))):
            assert agrees(cell, vals), (rel(card), name, title, cell, vals)


@pytest.mark.parametrize("folder", [EVAL, *sorted(p for p in EVAL.iterdir() if p.is_dir())], ids=rel)
def test_eval_markdown_is_rendered_from_the_json(folder):
    for task in ("unconditional", "infill", "fidelity", "coherence"):
        md = folder / f"{task}.md"
        if not md.is_file():
            continue
        rows = {name for name, *_ in quoted_rows(md, {**table1_rows(folder), **fit_rows(folder)})}
        assert rows, f"{rel(md)} quotes no row of {task}.json"


def test_pooled_fidelity_is_rendered_from_the_committed_seeds():
    """eval/fidelity-seeds.md, which the README's verdict on infilling quotes, is what
    scripts/fidelity_seeds.py makes of the seed runs it names, and they include today's eval/fidelity.json."""
    md = (EVAL / "fidelity-seeds.md").read_text()
    runs = re.findall(r"eval/[\w/-]*fidelity\.json", md.splitlines()[0])
    assert "eval/fidelity.json" in runs and len(runs) >= 3, runs
    made = subprocess.run([sys.executable, "scripts/fidelity_seeds.py", *runs], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    assert made == md


# --- the models' own figures ------------------------------------------------------------------

def vae_metrics() -> dict:
    return json.loads((VAE_DIR / "metrics.json").read_text())


def test_vae_figures_in_models_doc_and_card():
    m = vae_metrics()
    figures = {
        "argmax reconstruction token accuracy from mu (free-running decode)": m["test"]["accuracy"],
        "teacher-forced token accuracy": m["test"]["accuracy_teacher_forced"],
        "active latent dims (mean posterior sigma < 0.98)": m["test"]["active_dims"],
    }
    for path in (MODELS_DOC, VAE_DIR / "README.md"):
        seen = set()
        for _header, body in tables(path.read_text()):
            for row in body:
                name = label(row[0])
                if name in figures:
                    assert agrees(row[1], [figures[name]]), (rel(path), name, row[1], figures[name])
                    seen.add(name)
                elif name.startswith("mean KL"):
                    assert agrees(row[1], [m["test"]["kl"]]), (rel(path), name, row[1])
        assert seen == set(figures), (rel(path), "must show", set(figures) - seen)
    for path in GUIDES:  # the research log's status table, or wherever else a doc says it
        for said in re.findall(r"argmax accuracy (0\.\d+)", " ".join(path.read_text().split())):
            assert agrees(said, [m["test"]["accuracy"]]), (rel(path), "VAE accuracy", said)


def test_vae_steps_in_models_doc_and_card():
    m = vae_metrics()
    text = " ".join(MODELS_DOC.read_text().split())
    said = re.search(r"shipped weights are from step ([\d,]+) of ([\d,]+) \(([\d.]+) h", text)
    assert said, "docs/models.md's MusicVAE section must say 'The shipped weights are from step S of T (H h'"
    assert int(said.group(1).replace(",", "")) == m["best"]["step"]
    assert int(said.group(2).replace(",", "")) == m["steps"]
    assert agrees(said.group(3), [m["hours"]])
    card = " ".join((VAE_DIR / "README.md").read_text().split())
    said = re.search(r"Ran (\d+) steps in ([\d.]+) h of wall time; these weights are from step (\d+)", card)
    assert said and (int(said.group(1)), int(said.group(3))) == (m["steps"], m["best"]["step"])
    assert agrees(said.group(2), [m["hours"]])


def parameters(directory: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


@pytest.mark.parametrize("directory", [VAE_DIR, *LATENT_MODELS], ids=lambda d: d.name)
def test_card_parameter_count(directory):
    card = (directory / "README.md").read_text()
    n = parameters(directory)
    exact = re.search(r"([\d,]{7,}) parameters", card)
    approx = re.search(r"([\d.]+)M parameters", card)
    assert exact or approx, f"{rel(directory)}/README.md states no parameter count"
    if exact:
        assert int(exact.group(1).replace(",", "")) == n
    else:
        assert agrees(approx.group(1), [n / 1e6])


@pytest.mark.parametrize("directory", LATENT_MODELS, ids=lambda d: d.name)
def test_latent_model_card_step(directory):
    training = json.loads((directory / "config.json").read_text())["training"]
    card = " ".join((directory / "README.md").read_text().split())
    said = re.search(r"These weights: step ([\d,]+)", card)
    assert said and int(said.group(1).replace(",", "")) == training["train_step"]


def test_models_doc_diffusion_training_figures_match_the_card():
    directory = REPO / "checkpoints" / "diffusion-cpu"
    card = " ".join((directory / "README.md").read_text().split())
    text = " ".join(MODELS_DOC.read_text().split())
    ran = re.search(r"([\d,]+) steps in ([\d.]+) h of wall time", card)
    said = re.search(r"trained here in (\d+) minutes \(([\d,]+) steps\)", text)
    assert ran and said, "docs/models.md must say 'trained here in M minutes (S steps)' as the card's 'S steps in H h'"
    assert said.group(2) == ran.group(1)
    assert abs(int(said.group(1)) - 60 * float(ran.group(2))) <= 1
    width = re.search(r"\((\d+\.\d)M parameters\), predicting", text)
    assert width and agrees(width.group(1), [parameters(directory) / 1e6])


def bench_output(card: Path) -> tuple[dict, dict]:
    """The card's `bench/bench_sampling.py` output: times {(sampler, steps, batch): (fp32, bf16, reference)}
    and quality {(sampler, steps): (pitch C, pitch V, dur C, dur V)}."""
    text = card.read_text()
    times, quality = {}, {}
    for m in re.finditer(r"^(ddpm|ddim) (\d+) +(\d+) +([\d.]+) +([\d.]+)(?: +([\d.]+))? *$", text, re.M):
        times[(m.group(1), int(m.group(2)), int(m.group(3)))] = tuple(
            float(v) if v else None for v in m.group(4, 5, 6))
    part = text.split("quality:", 1)[1] if "quality:" in text else ""
    for m in re.finditer(r"^(ddpm|ddim) (\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +[\d.]+ *$", part, re.M):
        quality[(m.group(1), int(m.group(2)))] = tuple(float(v) for v in m.group(3, 4, 5, 6))
    return times, quality


@pytest.mark.parametrize("path", GUIDES, ids=rel)
def test_sampler_table_is_the_cards_bench(path):
    """A table of samplers (docs/models.md's) quotes the paper-architecture model's bench output."""
    times, quality = bench_output(REPO / "checkpoints" / "diffusion-cpu" / "README.md")
    seen = 0
    for header, body in tables(path.read_text()):
        if header[0] != "sampler":
            continue
        for row in body:
            m = re.match(r"(DDPM|DDIM) (\d+)", row[0])
            key = (m.group(1).lower(), int(m.group(2)))
            cells = dict(zip(header, row, strict=True))
            assert quality, f"{rel(path)} quotes a sampling bench the diffusion card does not have"
            want = quality[key]
            for i, title in enumerate(("pitch C", "pitch Var", "duration C", "duration Var")):
                assert agrees(cells[title], [want[i]]), (row[0], title, cells[title], want[i])
            one = times[(*key, 1)]
            assert agrees(cells["1 melody"], [one[0]] + ([one[2]] if "reference" in cells["1 melody"] else [])), row
            many = times[(*key, 16)]
            cell = cells["16 melodies (bf16)"]
            assert agrees(cell, [many[1]] + ([many[2]] if "reference" in cell else [])), row
            seen += 1
    assert seen == 0 or seen >= 2
    if path == MODELS_DOC:
        assert seen >= 2, "docs/models.md shows the sampler table of the paper-architecture model"


# --- commands ---------------------------------------------------------------------------------

def card_command(card: Path) -> str:
    text = card.read_text()
    block = re.search(r"## Training\n.*?```\w*\n(.*?)```", text, re.S)
    assert block, f"{rel(card)} has no training command"
    return " ".join(block.group(1).split("#")[0].split())


@pytest.mark.parametrize("card", CARDS, ids=rel)
def test_models_doc_shows_the_cards_training_command(card):
    models = " ".join(MODELS_DOC.read_text().split())
    command = card_command(card)
    assert command in models, f"docs/models.md must show the command of {rel(card)}: {command}"


def test_readme_test_command_runs_every_tier_and_ci_runs_it():
    text = README.read_text()
    commands = [line for line in text.splitlines() if line.startswith("pip install -r requirements-dev.txt")]
    assert len(commands) == 1, "README: one install-and-test command near its top"
    command = commands[0]
    assert re.search(r'-m ""|-m \x27\x27', command), "the README's test command must select every tier (-m \"\")"
    assert "--durations=15" in command
    ci = (REPO / ".ci" / "run").read_text()
    assert command in ci, ".ci/run must run exactly the README's test command"


def test_readme_is_short_and_starts_with_the_two_commands():
    """The README is a user's guide, not a lab notebook: at most about 2,000 words, and its first
    code block installs and runs the app, then installs and runs the tests (the one .ci/run runs)."""
    text = README.read_text()
    words = len(text.split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words; move detail to docs/ (limit {README_MAX_WORDS})"
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first, "README.md: a bash block with the two set-up commands"
    commands = [line for line in first.group(1).splitlines() if line and not line.startswith("#")]
    assert commands[0] == "pip install -r requirements.txt && python app.py", commands
    assert commands[1].startswith("pip install -r requirements-dev.txt"), commands
    assert commands[1] in (REPO / ".ci" / "run").read_text(), ".ci/run runs the README's test command"
    assert text.index(first.group(0)) < len(text) // 4, "the set-up commands belong near the top"


def fidelity_pooled() -> dict[tuple[str, str], dict[str, float]]:
    """(style, figure) -> {column: value} of eval/fidelity-seeds.md (rendered from the seed runs, checked above)."""
    out = {}
    for header, body in tables((EVAL / "fidelity-seeds.md").read_text()):
        for row in body:
            cells = dict(zip(header, row, strict=True))
            out[(cells["style"], cells["figure"])] = {k: float(v) for k, v in cells.items()
                                                      if re.fullmatch(r"-?\d+\.\d+", v)}
    return out


def coherence_floor(key: str) -> tuple[list[float], list[float]]:
    """Today's samples' and the real windows' mean `key`, per seed, from eval/coherence-floor-seed*/."""
    runs = [json.loads(f.read_text())["groups"]["all"]["rows"]
            for f in sorted(EVAL.glob("coherence-floor-seed*/coherence.json"))]
    assert len(runs) >= 3, "the README quotes three seeds of eval/coherence-floor-seed*/"
    return ([r["diffusion samples"]["mean"][key] for r in runs], [r["real test windows"]["mean"][key] for r in runs])


def readme_quality() -> dict[str, tuple[list[float], list[float]]]:
    """What the README's quality table may say, by the start of its row: (symdiff's figures, the comparison's)."""
    pooled = fidelity_pooled()
    styles = ("folk", "chorale", "vocal")

    def fit(figure: str) -> tuple[list[float], list[float]]:
        rows = [pooled[(s, figure)] for s in styles]
        return ([r["default infill"] for r in rows],
                [r["interpolation"] for r in rows] + [r["real middle"] for r in rows])

    unconditional = table1_rows()["unconditional: diffusion"]
    return {
        "Infilled bars: pitches": fit("pitch overlap"),
        "Infilled bars: key": fit("pitch-class cosine"),
        "New 64-bar melodies: key": coherence_floor("key_stability"),
        "New 64-bar melodies: bars without": coherence_floor("silent_bars"),
        "The paper's Table 1": ([unconditional[c][0] for c in ("pitch C", "pitch Var", "duration C", "duration Var")],
                                list(paper_rows()["unconditional: diffusion"])),
    }


def same_figures(cell: str, expected: list[float]) -> bool:
    """The cell shows exactly these figures, in order, at its printed precision."""
    got = printed(cell)
    return len(got) == len(expected) and all(abs(v - e) <= t for (v, t), e in zip(got, expected, strict=True))


def test_readme_quality_table_is_the_committed_results():
    expected = readme_quality()
    seen = set()
    for header, body in tables(README.read_text()):
        if header[0] != "what we measured":
            continue
        for row in body:
            start = [k for k in expected if row[0].startswith(k)]
            assert len(start) == 1, f"README quality row with no committed source in this test: {row[0]!r}"
            ours, theirs = expected[start[0]]
            assert same_figures(row[1], ours), (row[0], row[1], ours)
            assert same_figures(row[2], theirs), (row[0], row[2], theirs)
            seen.add(start[0])
    assert seen == set(expected), f"README's quality table lacks {set(expected) - seen}"


SECONDS = re.compile(r"\b\d+\.\d+ s\b")


def test_readme_speed_figures_are_in_the_docs_they_name():
    """Every time in the README's speed table is written in the doc its row links to (the
    measurement with its machine, load and command), so the README shows no time of its own."""
    rows = 0
    for header, body in tables(README.read_text()):
        if header[-1] != "measured in":
            continue
        for row in body:
            sources = [(README.parent / link.split("#")[0]).read_text()
                       for link in re.findall(r"\]\(([^)\s]+)\)", row[-1])]
            assert sources, f"README speed row names no doc: {row[0]!r}"
            for cell in row[1:-1]:
                for figure in SECONDS.findall(cell):
                    assert any(figure in s for s in sources), f"README speed: {figure} ({row[0]!r}) not in {row[-1]}"
            rows += 1
    assert rows >= 3, "README: a speed table whose last column links the measurements"


# --- outputs land in ignored places -----------------------------------------------------------

def example_outputs() -> list[str]:
    text = "\n".join(p.read_text() for p in GUIDES)
    blocks = re.findall(r"```(?:console|bash|python)\n(.*?)```", text, re.S)
    outs = []
    for block in blocks:
        for line in block.splitlines():
            if "symdiff" not in line and "tokens_to_midi" not in line:
                continue
            outs += re.findall(r"--out[ =](\S+)", line.split("#")[0])
            outs += re.findall(r"tokens_to_midi\([^)]*?\"([^\"]+)\"", line)
    return outs


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_examples_write_only_to_ignored_places():
    outs = example_outputs()
    assert len(outs) >= 5, outs
    tracked = []
    for out in outs:
        if out.startswith("/"):
            continue  # outside the checkout (/tmp, /dev/full)
        path = out.rstrip("/") + ("/x.mid" if out.endswith("/") else "")
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0
        if not ignored:
            tracked.append(out)
    assert not tracked, f"README or docs/ examples write these into the checkout, where git would see them: {tracked}"


# --- nothing outside the repository -----------------------------------------------------------

# Built from parts so that this file does not match itself.
OUTSIDE = re.compile("|".join([
    r"\b" + "REFER" + r"ENCE(?:\.md)?\s+(?:sec|section)",  # the old notes file, never in the repository
    "REFER" + r"ENCE\.md",
    r"\.\./" + "shared",
    "/work/" + "shared", "/work/" + "main",
    "shared/" + "paper",
]))


def docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


def cited_texts() -> list[tuple[str, str]]:
    """(where, text) of every doc and every Python file of ours (docstrings and comments alike)."""
    me = Path(__file__).resolve()
    return [(rel(p), p.read_text()) for p in docs() + sources() if p.resolve() != me]


def test_nothing_cites_a_file_outside_the_repository():
    found = [f"{where}: {m.group()!r}" for where, text in cited_texts() for m in OUTSIDE.finditer(text)]
    for script in [*(REPO / "scripts").glob("*.sh"), REPO / ".ci" / "run", REPO / "pyproject.toml"]:
        found += [f"{rel(script)}: {m.group()!r}" for m in OUTSIDE.finditer(script.read_text())]
    assert not found, "citations of files outside the repository:\n" + "\n".join(found)


def note_sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", NOTES.read_text(), re.M))


def paper_sections() -> set[str]:
    """The paper's section numbers, from the table in docs/paper_notes.md sec. 0."""
    text = NOTES.read_text().split("## 1. ")[0]
    found = set()
    for header, body in tables(text):
        if header[0] == "section":
            for row in body:
                found.add(row[0])
                found.update(re.findall(r"\b(\d\.\d)\b", row[1]))
    return found


def expand(ref: str) -> list[str]:
    """'3', '3.1', '6-7' -> the section numbers cited."""
    if "-" in ref:
        a, b = ref.split("-")
        if "." not in a and "." not in b:
            return [str(i) for i in range(int(a), int(b) + 1)]
        return [a, b]
    return [ref]


def test_section_citations_exist():
    notes, paper = note_sections(), paper_sections()
    assert {"1", "4", "7", "8"} <= notes and {"3.1", "4.4", "5.2"} <= paper
    wrong = []
    for where, text in cited_texts():
        flat = " ".join(text.split())
        for m in re.finditer(r"paper_notes(?:\.md)?`? (?:sec\.|section) (\d+(?:-\d+)?)", flat):
            wrong += [f"{where}: paper_notes sec. {s}" for s in expand(m.group(1)) if s not in notes]
        for m in re.finditer(r"\bpaper(?:'s)?,? (?:sec\.|section) (\d(?:\.\d)?(?:-\d(?:\.\d)?)?)", flat):
            wrong += [f"{where}: paper sec. {s}" for s in expand(m.group(1)) if s not in paper]
    assert not wrong, "citations of sections that do not exist:\n" + "\n".join(wrong)


def test_upstream_names_in_docstrings_are_written_down_here():
    """A docstring may say where upstream a fact was read ("the official `models/ncsn.py`"), but
    the fact must be in the repository: docs/paper_notes.md lists every such name."""
    notes = NOTES.read_text()
    missing = set()
    for path in sources():
        for m in re.finditer(r"\b(?:official|[Mm]agenta)(?:'s)? (?:code's )?`([^`]*(?:/[^`]*|\.(?:py|cfg)))`",
                             path.read_text()):
            if f"`{m.group(1)}`" not in notes:
                missing.add(f"{rel(path)}: {m.group(1)}")
    assert not missing, "upstream names missing from docs/paper_notes.md sec. 0:\n" + "\n".join(sorted(missing))


def test_relative_links_resolve():
    broken = []
    for path in docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{rel(path)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def braces(token: str) -> list[str]:
    """'eval/infill.{json,md}' -> ['eval/infill.json', 'eval/infill.md']."""
    parts = re.split(r"\{([^}]*)\}", token)
    options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*options)]


def test_architecture_names_only_files_that_exist():
    """Every file ARCHITECTURE.md names (`symdiff/x.py`, `x.py` for a module, `eval/...`,
    `scripts/...`) exists, so the map stays true when modules move."""
    text = ARCHITECTURE.read_text()
    missing = []
    for token in re.findall(r"`([\w-]+\.py|[\w-]+/[\w./{},*-]*)`", text):  # a module, or a path
        if token.startswith(("runs/", "OUT/")):
            continue  # what a command writes, not a committed file
        for name in braces(token):
            name = name.split(" ")[0]
            if not any(list(REPO.glob(c)) if "*" in c else (REPO / c).exists() for c in (name, f"symdiff/{name}")):
                missing.append(token)
    assert not missing, "ARCHITECTURE.md names files that do not exist: " + ", ".join(sorted(set(missing)))
