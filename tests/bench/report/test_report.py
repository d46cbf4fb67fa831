"""REPORT.md generation from hand-written run directories: determinism, blocks of rows sorted by score, measured vs
reported, CSV = tables, suite pages and runs pages, ablation and diagnostic runs kept off the leaderboard, stale-file
deletion limited to the report's files."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from bench.errors import DataFormatError
from bench.report import build_report, load_reported

PROTOCOL = {
    "empty_union_iou": 1.0,
    "ignore_value": 255,
    "thresholds": [0.5, 0.9],
    "bootstrap": 1000,
    "ci_seed": 0,
}


def split_metrics(ciou, giou, n=4, failed=0):
    return {
        "n": n, "n_failed": failed, "ciou": ciou, "giou": giou, "prec@0.5": 0.5, "prec@0.9": 0.25,
        "ciou_ci95": [ciou - 0.05, ciou + 0.05], "giou_ci95": [giou - 0.1, giou + 0.1],
    }  # fmt: skip


def write_run(
    run_dir: Path, model: str, metrics_by_suite: dict, created: str, label: str | None = None, **record
) -> Path:
    """A run directory as the runner writes it: run.json, metrics and predictions (per suite when several).

    Without `record` (kind, group, status, schema) run.json is schema 1, as the committed runs are."""
    run_dir.mkdir(parents=True)
    suites = list(metrics_by_suite)
    info = {
        "suites": suites, "model": model, "model_config": {"steps": 1}, "protocol": PROTOCOL, "seed": 0,
        "git_commit": "0123abc", "created": created, "versions": {"numpy": "2.0"}, "device": "cpu",
        "dataset_fingerprints": {suite: f"fp-{suite}" for suite in suites}, "warnings": ["tiny weights"],
        "timings": {"total_s": 2.0}, "status": "finished",
    }  # fmt: skip
    if label:
        info["label"] = label
    info.update(record)
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    for suite, splits in metrics_by_suite.items():
        suffix = f".{suite}" if len(suites) > 1 else ""
        (run_dir / f"metrics{suffix}.json").write_text(
            json.dumps({"suite": suite, "model": model, "splits": splits})
        )
        records = [
            {
                "sample_id": f"{split}-{i}",
                "split": split,
                "segmentation": None,
                "iou": iou,
                "status": "ok",
                "error": None,
            }
            for split, metrics in splits.items()
            for i, iou in enumerate([0.95, 0.7, 0.3, None][: metrics["n"]])
        ]
        (run_dir / f"predictions{suffix}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def ablation(group: str | None) -> dict:
    return {"kind": "ablation", "group": group, "status": "complete", "schema": 2}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three leaderboard runs: oracle on two suites, an older oracle run, a labelled genmask run; three
    ablation variants (two in "steps", one labelled like a leaderboard model, and the same label in a
    second group), a diagnostic run and an ablation summary written by another command. Tests only read it."""
    root = tmp_path_factory.mktemp("report") / "results"
    write_run(
        root / "runs" / "multi",
        "oracle",
        {
            "synthref": {"val": split_metrics(0.9, 0.8)},
            "refcoco": {"val": split_metrics(0.5123, 0.4, n=3), "testA": split_metrics(0.6, 0.55)},
        },
        "2025-03-02T10:00:00+00:00",
    )
    write_run(
        root / "runs" / "old",
        "oracle",
        {"synthref": {"val": split_metrics(0.1, 0.1)}},
        "2025-03-01T10:00:00+00:00",
    )
    write_run(
        root / "runs" / "gm",
        "genmask",
        {"refcoco": {"val": split_metrics(0.7, 0.65)}},
        "2025-03-01T00:00:00",
        label="GenMask-tiny",
    )
    newer = "2025-04-01T00:00:00+00:00"  # newer than every leaderboard run: must still not replace one
    write_run(root / "runs" / "steps-1", "genmask", {"refcoco": {"val": split_metrics(0.3, 0.3)}}, newer,
              label="oracle", **ablation("steps"))  # fmt: skip
    write_run(root / "runs" / "steps-4", "genmask", {"synthref": {"val": split_metrics(0.33, 0.34)}}, newer,
              label="steps=4", **ablation("steps"))  # fmt: skip
    write_run(root / "runs" / "cfg-2", "genmask", {"refcoco": {"val": split_metrics(0.2, 0.2)}}, newer,
              label="oracle", **ablation("guidance scale"))  # fmt: skip
    write_run(root / "runs" / "probe", "genmask", {"synthref": {"val": split_metrics(0.11, 0.12)}}, newer,
              label="probe", kind="diagnostic", status="complete", schema=2)  # fmt: skip
    (root / "ablations" / "steps").mkdir(parents=True)
    (root / "ablations" / "steps" / "report.md").write_text("# Steps ablation\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def report(results: Path) -> str:
    return build_report(results).read_text(encoding="utf-8")


def table_after(report: str, heading: str) -> list[list[str]]:
    """Cells of the first markdown table after a heading (header row first, separator dropped)."""
    lines = report[report.index(heading + "\n") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-: "):
            rows.append([cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def block(report: str, suite: str, title: str) -> list[list[str]]:
    """The table of one block ('Models', 'Trivial baselines', ...) of a suite's section of REPORT.md."""
    section = report[report.index(f"## {suite}"):]
    return table_after(section, section[section.index(f"**{title}"):].splitlines()[0])


def plain(cell: str) -> str:
    """Markdown link text, or the cell itself."""
    match = re.fullmatch(r"\[(.*)\]\((.*)\)", cell)
    return match.group(1) if match else cell


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical(results: Path):
    build_report(results)
    first = snapshot(results)
    build_report(results)
    assert snapshot(results) == first
    assert {"tables/refcoco.csv", "tables/synthref.csv", "plots/refcoco__runs__multi.png"} <= set(first)
    assert sum(name.endswith(".png") for name in first) == 3  # oracle x 2 suites + GenMask-tiny on refcoco
    pages = {"ablations/steps/runs.md", "ablations/guidance_scale/runs.md", "diagnostics/runs.md", "runs.md",
             "suites/refcoco.md", "suites/synthref.md"}
    assert pages <= set(first)
    manifest = json.loads(first[".report-manifest.json"])
    assert manifest["files"] == sorted(manifest["files"]) and pages <= set(manifest["files"])
    assert "ablations/steps/report.md" not in manifest["files"]  # another command's file, never the report's


def test_header_and_measured_cells(results: Path, report: str):
    assert "Generated by `python -m bench report --results " in report.splitlines()[2]
    assert "do not edit by hand." in report.splitlines()[2]
    models, trivial = block(report, "refcoco", "Models"), block(report, "refcoco", "Trivial baselines")
    splits = ["val cIoU / gIoU", "testA cIoU / gIoU", "testB cIoU / gIoU"]  # testB: the reported rows have it
    assert models[0][:5] == trivial[0] == ["model", *splits, "mean cIoU"]
    assert models[0][5:] == ["training samples", "training seeds"]
    assert models[1] == ["[GenMask-tiny](runs/gm/)", "70.0 [65.0, 75.0] / 65.0 [55.0, 75.0]", "", "", "70.0",
                         "not recorded", "1"]  # no testA; no cost record; one checkpoint, one seed
    assert trivial[1] == ["[oracle](runs/multi/)", "51.2 [46.2, 56.2] / 40.0 [30.0, 50.0]",
                          "60.0 [55.0, 65.0] / 55.0 [45.0, 65.0]", "", "55.6"]


BLOCK_TITLES = {"model": "Models", "trivial baseline": "Trivial baselines", "reported": "Reported by papers"}


def test_blocks_are_sorted_by_score_and_reported_rows_stay_apart(results: Path, report: str):
    section = report[report.index("## refcoco\n"):report.index("## refcoco+")]
    assert section.index("**Models**") < section.index("**Trivial baselines") < section.index("**Reported by papers")
    reported = block(report, "refcoco", "Reported by papers")
    assert reported[0][-1] == "source" and all(row[0].endswith(" (reported)") for row in reported[1:])
    assert "GenMask (reported)" in [row[0] for row in reported]
    means = [float(row[-2]) for row in reported[1:]]
    assert means == sorted(means, reverse=True) and len(means) > 5  # by mean cIoU, best first
    for title in ("Models", "Trivial baselines"):
        assert all(row[0].startswith("[") for row in block(report, "refcoco", title)[1:])  # measured rows link
    reasonseg = report[report.index("## reasonseg (reported numbers only, no measured runs yet)"):]
    assert "**Models**" not in reasonseg and "**Reported by papers" in reasonseg


def test_csv_matches_markdown_tables(results: Path, report: str):
    for suite in ("refcoco", "synthref", "refcocog"):
        with open(results / "tables" / f"{suite}.csv", encoding="utf-8", newline="") as handle:
            csv_rows = list(csv.DictReader(handle))
        shown = []
        for kind, title in BLOCK_TITLES.items():
            records = [record for record in csv_rows if record["block"] == kind]
            if not records:
                continue
            table = block(report, suite, title)
            splits = [name.removesuffix(" cIoU / gIoU") for name in table[0] if name.endswith(" cIoU / gIoU")]
            assert len(records) == len(table) - 1
            for row, record in zip(table[1:], records, strict=True):
                assert plain(row[0]) == record["model"] and row[len(splits) + 1] == record["mean_ciou"]
                for split, cell in zip(splits, row[1:len(splits) + 1], strict=True):
                    assert cell == expected_cell(record, split)
            shown += records
        assert shown == csv_rows  # the CSV lists the blocks in the page's order, nothing else


def expected_cell(record: dict[str, str], split: str) -> str:
    """The markdown cell rebuilt from the CSV numbers."""
    if all(record[f"{split}_{key}"] == "" for key in ("ciou", "giou")):
        return ""
    parts = []
    for metric in ("ciou", "giou"):
        text = record[f"{split}_{metric}"] or "–"
        if record[f"{split}_{metric}_lo"]:
            text += f" [{record[f'{split}_{metric}_lo']}, {record[f'{split}_{metric}_hi']}]"
        parts.append(text)
    return " / ".join(parts)


def test_several_suites_suite_pages_and_runs_page(results: Path, report: str):
    synthref = block(report, "synthref", "Trivial baselines")
    assert [plain(row[0]) for row in synthref[1:]] == ["oracle"]  # newest oracle run only
    assert synthref[1][1].startswith("90.0 ") and synthref[1][0] == "[oracle](runs/multi/)"
    assert "Superseded by a newer run of the same model: [runs/old](runs/old/) (oracle)." in report
    assert "[suites/refcoco.md](suites/refcoco.md)" in report
    page = (results / "suites" / "refcoco.md").read_text(encoding="utf-8")
    details = table_after(page, "## Details per split (%)")
    assert details[0] == ["model", "split", "n", "failed", "cIoU", "gIoU", "Prec@0.5", "Prec@0.9"]
    assert ["oracle", "val", "3", "0", "51.2", "40.0", "50.0", "25.0"] in details
    assert details[1][0] == "GenMask-tiny"  # models before baselines
    synthref_page = (results / "suites" / "synthref.md").read_text(encoding="utf-8")
    assert ("![synthref val: per-sample IoU and Prec@X of oracle](../plots/synthref__runs__multi.png)"
            in synthref_page)  # the figure's title says what it shows
    runs = (results / "runs.md").read_text(encoding="utf-8")
    for run in ("runs/gm", "runs/multi", "runs/old"):
        assert f"### [{run}]({run}/)" in runs and f"### [{run}]" not in report
    assert "- dataset fingerprints: refcoco: fp-refcoco, synthref: fp-synthref" in runs
    assert "- warning: tiny weights" in runs and "- git commit: 0123abc" in runs
    for page_name, text in (("REPORT.md", report), ("runs.md", runs), ("suites/refcoco.md", page)):
        for href in re.findall(r"\]\(([^)]+)\)", text):
            assert resolve_link(results, page_name, href).exists(), (page_name, href)


def test_stale_outputs_are_removed(tmp_path: Path):
    write_run(tmp_path / "a", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    run_b = write_run(
        tmp_path / "b", "other", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00"
    )
    build_report(tmp_path)
    assert (tmp_path / "plots" / "synthref__b.png").exists()
    (run_b / "run.json").unlink()
    build_report(tmp_path)
    assert not (tmp_path / "plots" / "synthref__b.png").exists()
    assert (tmp_path / "plots" / "synthref__a.png").exists()


def test_other_generated_documents_are_linked(tmp_path: Path):
    (tmp_path / "genmask-tiny").mkdir()
    (tmp_path / "genmask-tiny" / "DIAGNOSTICS.md").write_text("# Diagnostics of a model\n\nbody\n")
    report = build_report(tmp_path).read_text()
    assert "## Other documents" in report
    assert "- [Diagnostics of a model](genmask-tiny/DIAGNOSTICS.md)" in report


def test_empty_results_dir(tmp_path: Path):
    report = build_report(tmp_path / "nothing").read_text(encoding="utf-8")
    assert "No runs yet" in report
    assert "GenMask (reported)" in report  # paper numbers are still listed


def test_incomplete_run_is_reported_not_fatal(tmp_path: Path):
    run_dir = write_run(
        tmp_path / "r", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00"
    )
    (run_dir / "metrics.json").unlink()
    report = build_report(tmp_path).read_text(encoding="utf-8")
    assert "no metrics file for suite synthref" in (tmp_path / "runs.md").read_text(encoding="utf-8")
    assert "**1 run has problems**, so not all of its results are shown: `r` (see [runs.md](runs.md))." in report


def test_malformed_run_json_names_the_file(tmp_path: Path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text('{"model": "x",\n "suites": [}')
    with pytest.raises(DataFormatError, match=r"bad/run.json:2"):
        build_report(tmp_path)


def test_reported_csv_contents():
    values = {(v.suite, v.split, v.method, v.metric): v for v in load_reported()}
    assert values[("refcoco", "testA", "GenMask", "ciou")].value == 83.3
    assert values[("refcocog", "test", "EVF-SAM", "ciou")].value == 78.3
    assert values[("reasonseg", "test-long", "LISA-7B (ft)", "ciou")].value == 51.0
    assert values[("reasonseg", "test", "GenMask", "giou")].value == 52.3
    methods = {v.method for v in values.values()}
    assert {
        "LISA-7B",
        "LISA-7B (ft)",
        "GLaMM",
        "GSVA",
        "PixelLM",
        "EVF-SAM",
        "CRIS",
        "LAVT",
        "GenMask",
    } <= methods
    cited = values[("reasonseg", "test", "LISA-7B (ft) as cited by GenMask", "ciou")]
    assert cited.value == 34.1 and "48.4" in cited.note and "mismatch" in cited.note
    refer_methods = {m for (s, _, m, _) in values if s == "refcoco+"}
    assert len([k for k in values if k[0] == "refcoco+"]) == 3 * len(refer_methods) - 1  # GenMask has no val


def resolve_link(results: Path, page: str, href: str) -> Path:
    """Where a relative link on a generated page points."""
    return (results / page).parent.joinpath(unquote(href)).resolve()


def test_ablation_variants_stay_off_the_leaderboard(results: Path, report: str):
    measured = [row[0] for title in ("Models", "Trivial baselines") for row in block(report, "refcoco", title)[1:]]
    assert measured == ["[GenMask-tiny](runs/gm/)", "[oracle](runs/multi/)"]  # not the newer "oracle" variants
    assert [plain(row[0]) for row in block(report, "synthref", "Trivial baselines")[1:]] == ["oracle"]
    assert "Superseded by a newer run of the same model: [runs/old](runs/old/) (oracle)." in report
    leaderboards = report.partition("## Ablations")[0]
    assert "steps-" not in leaderboards and "cfg-2" not in leaderboards
    with open(results / "tables" / "refcoco.csv", encoding="utf-8", newline="") as handle:
        assert "runs/steps-1" not in [row["run_or_source"] for row in csv.DictReader(handle)]
    steps = (results / "ablations" / "steps" / "runs.md").read_text(encoding="utf-8")
    diagnostics = (results / "diagnostics" / "runs.md").read_text(encoding="utf-8")
    assert "- kind: ablation (group: steps)" in steps and "- kind: diagnostic" in diagnostics
    assert "### [runs/steps-1](../../runs/steps-1/)" in steps  # provenance on the group's own page
    assert "steps-1" not in (results / "runs.md").read_text(encoding="utf-8")


def test_ablations_section_and_group_pages(results: Path, report: str):
    section = report[report.index("## Ablations\n") : report.index("## Diagnostics\n")]
    assert section.index("[guidance scale]") < section.index("[steps]")
    assert "- [guidance scale](ablations/guidance_scale/runs.md): 1 variant\n" in section
    assert (
        "- [steps](ablations/steps/runs.md): 2 variants; summary: "
        "[ablations/steps/report.md](ablations/steps/report.md)\n" in section
    )
    steps = (results / "ablations" / "steps" / "runs.md").read_text(encoding="utf-8")
    assert steps.startswith("# Ablation: steps\n") and "[ablations/steps/report.md](report.md)" in steps
    assert "Back to [REPORT.md](../../REPORT.md)" in steps
    assert table_after(steps, "## refcoco")[1] == [
        "[oracle](../../runs/steps-1/)", "30.0 [25.0, 35.0] / 30.0 [20.0, 40.0]", "runs/steps-1"
    ]  # fmt: skip
    assert plain(table_after(steps, "## synthref")[1][0]) == "steps=4"
    guidance = (results / "ablations" / "guidance_scale" / "runs.md").read_text(encoding="utf-8")
    assert [row[0] for row in table_after(guidance, "## refcoco")[1:]] == ["[oracle](../../runs/cfg-2/)"]
    assert "steps-1" not in guidance
    for page, text in (("REPORT.md", report), ("ablations/steps/runs.md", steps)):
        for href in re.findall(r"\]\(([^)]+)\)", text):
            assert resolve_link(results, page, href).exists(), (page, href)


def test_diagnostic_runs_get_their_own_section(results: Path, report: str):
    section = report[report.index("## Diagnostics\n"):]
    assert "- [Diagnostic runs](diagnostics/runs.md): 1 run\n" in section
    page = (results / "diagnostics" / "runs.md").read_text(encoding="utf-8")
    assert table_after(page, "## synthref")[1][0] == "[probe](../runs/probe/)"
    probe = resolve_link(results, "diagnostics/runs.md", "../runs/probe/")
    assert probe == (results / "runs" / "probe").resolve()
    assert "probe" not in report.partition("## Ablations")[0]
    assert report.count("diagnostics/runs.md") == 1 and "## Other documents" not in report
    build_report(results)  # the page now exists on disk: still not an "other document"
    assert "## Other documents" not in (results / "REPORT.md").read_text(encoding="utf-8")


def test_sections_are_omitted_without_such_runs(tmp_path: Path):
    write_run(tmp_path / "a", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    report = build_report(tmp_path).read_text(encoding="utf-8")
    assert "## Ablations" not in report and "## Diagnostics" not in report
    assert not (tmp_path / "ablations").exists() and not (tmp_path / "diagnostics").exists()


def test_user_files_survive_and_only_stale_outputs_go(tmp_path: Path):
    write_run(tmp_path / "a", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    run_b = write_run(tmp_path / "b", "other", {"synthref": {"val": split_metrics(0.5, 0.5)}},
                      "2025-01-01T00:00:00")  # fmt: skip
    run_c = write_run(tmp_path / "c", "other", {"synthref": {"val": split_metrics(0.4, 0.4)}},
                      "2025-01-01T00:00:00", **ablation("g"))  # fmt: skip
    build_report(tmp_path)
    assert (tmp_path / "ablations" / "g" / "runs.md").is_file()
    (tmp_path / "plots" / "my_figure.png").write_bytes(b"mine")
    (tmp_path / "tables" / "my_table.csv").write_text("mine\n")
    (run_b / "run.json").unlink()
    shutil.rmtree(run_c)
    build_report(tmp_path)
    assert (tmp_path / "plots" / "my_figure.png").read_bytes() == b"mine"
    assert (tmp_path / "tables" / "my_table.csv").read_text() == "mine\n"
    assert not (tmp_path / "plots" / "synthref__b.png").exists()
    assert (tmp_path / "plots" / "synthref__a.png").exists()
    assert not (tmp_path / "ablations").exists()  # the page went, and with it its emptied folders
    files = json.loads((tmp_path / ".report-manifest.json").read_text())["files"]
    assert "plots/synthref__a.png" in files and "plots/my_figure.png" not in files


def test_deleting_never_follows_a_symlink_out_of_the_results_dir(tmp_path: Path):
    results, outside = tmp_path / "results", tmp_path / "outside"
    write_run(results / "a", "oracle", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00")
    run_b = write_run(results / "b", "other", {"synthref": {"val": split_metrics(0.5, 0.5)}},
                      "2025-01-01T00:00:00")  # fmt: skip
    build_report(results)
    shutil.move(results / "plots", outside)  # the user keeps the figures elsewhere and links them back
    (results / "plots").symlink_to(outside, target_is_directory=True)
    (outside / "victim.png").write_bytes(b"keep")
    manifest = json.loads((results / ".report-manifest.json").read_text())
    escapes = ["../outside/victim.png", str(outside / "victim.png"), "plots/../../outside/victim.png"]
    manifest["files"] += escapes  # a damaged manifest must not reach outside either
    (results / ".report-manifest.json").write_text(json.dumps(manifest))
    (run_b / "run.json").unlink()
    build_report(results)
    assert (outside / "synthref__b.png").is_file() and (outside / "victim.png").read_bytes() == b"keep"
    assert (results / "plots").is_symlink()


def test_two_builds_with_ablations_are_byte_identical(tmp_path: Path):
    created = "2025-01-01T00:00:00"
    write_run(tmp_path / "x", "genmask", {"synthref": {"val": split_metrics(0.5, 0.5)}}, created,
              label="v1", **ablation("a/b"))  # fmt: skip
    write_run(tmp_path / "y", "genmask", {"synthref": {"val": split_metrics(0.6, 0.5)}}, created,
              label="v1", **ablation("a__b"))  # fmt: skip  (both names slug to a__b: two folders still)
    build_report(tmp_path)
    first = snapshot(tmp_path)
    assert {"ablations/a__b/runs.md", "ablations/a__b-2/runs.md"} <= set(first)
    build_report(tmp_path)
    assert snapshot(tmp_path) == first


def test_declared_runs_alone_make_the_report(tmp_path: Path, capsys):
    from bench.cli import main

    write_run(tmp_path / "runs" / "curated", "oracle", {"synthref": {"val": split_metrics(0.9, 0.8)}},
              "2025-03-01T00:00:00", command="python -m bench run --model oracle")  # fmt: skip
    write_run(tmp_path / "runs" / "predictions", "predictions", {"synthref": {"val": split_metrics(0.2, 0.2)}},
              "2025-03-02T00:00:00", label="oracle")  # an ad-hoc run, newer, same name  # fmt: skip
    declared = tmp_path / "runs.toml"
    declared.write_text('[[run]]\ndirectory = "runs/curated"\ncommand = "python -m bench run --model oracle"\n'
                        'label = "oracle"\n')
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert "left out 1 run directories that" in capsys.readouterr().err
    report = (tmp_path / "REPORT.md").read_text()
    assert "runs/curated" in report and "runs/predictions" not in report and "Superseded" not in report
    text = declared.read_text()
    for wrong, message in ((text.replace("--model oracle", "--model empty"), "was made by"),
                           (text.replace('label = "oracle"', 'label = "other"'), "labelled 'oracle', not")):
        declared.write_text(wrong)
        with pytest.raises(DataFormatError, match=message):
            build_report(tmp_path)
    declared.write_text('[[run]]\ndirectory = "../elsewhere"\ncommand = "x"\n')
    with pytest.raises(DataFormatError, match=r"runs.toml: run 1: no run.json in '../elsewhere'"):
        build_report(tmp_path)


def test_only_metric_settings_decide_the_protocol_warning(tmp_path: Path):
    for name, fingerprint in (("a", "86502d6474b518a7"), ("b", "65da605cae68394a")):
        protocol = {**PROTOCOL, "synthref": {"texts": "all", "generator": "1", "fingerprint": fingerprint}}
        write_run(tmp_path / name, name, {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00",
                  protocol=protocol)  # fmt: skip
    report = build_report(tmp_path).read_text(encoding="utf-8")
    assert "different metric settings" not in report  # only the generator fingerprint differs
    runs = (tmp_path / "runs.md").read_text(encoding="utf-8")
    assert "synthref: fp-synthref (generator 1, 65da605cae68394a)" in runs  # shown with the data instead
    run_json = tmp_path / "b" / "run.json"
    run_json.write_text(run_json.read_text().replace('"empty_union_iou": 1.0', '"empty_union_iou": 0.0'))
    assert "the synthref rows used different metric settings" in build_report(tmp_path).read_text(encoding="utf-8")


def test_labels_are_escaped_in_links_and_provenance_is_portable(tmp_path: Path, monkeypatch):
    from bench.report.text import PROJECT_ROOT

    config = {"checkpoint": f"{PROJECT_ROOT}/genmask/checkpoints/tiny",
              "vae": "/another/clone/of/genmask-bench/genmask/checkpoints/tiny/vae",  # a run made in another clone
              "cache": "/home/someone/.cache/genmask-bench/x/final", "data": "/data/refer_seg"}  # outside: as they are
    write_run(tmp_path / "r", "genmask", {"synthref": {"val": split_metrics(0.5, 0.5)}}, "2025-01-01T00:00:00",
              label="gm [4 steps] *ema*", model_config=config, warnings=[f"read {PROJECT_ROOT}/bench/x.py"],
              timings={"data_s": 0.40870969599745877, "samples": 1426, "model_breakdown_s": {"dit": 13.29715971}})
    report = build_report(tmp_path).read_text(encoding="utf-8")
    assert "[gm \\[4 steps\\] \\*ema\\*](r/)" in report
    page = (tmp_path / "suites" / "synthref.md").read_text(encoding="utf-8")
    assert "![synthref val: per-sample IoU and Prec@X of gm \\[4 steps\\] \\*ema\\*](../plots/" in page
    runs = (tmp_path / "runs.md").read_text(encoding="utf-8")
    assert ('cache="/home/someone/.cache/genmask-bench/x/final", checkpoint="genmask/checkpoints/tiny", '
            'data="/data/refer_seg", vae="genmask/checkpoints/tiny/vae"') in runs
    assert str(PROJECT_ROOT) not in runs and "- warning: read bench/x.py" in runs
    assert "- timings: data_s=0.41, model_breakdown_s={dit=13.30}, samples=1426" in runs
    monkeypatch.setenv("HOME", "/home/someone")  # another user's machine: the same bytes
    before = runs
    build_report(tmp_path)
    assert (tmp_path / "runs.md").read_text(encoding="utf-8") == before
