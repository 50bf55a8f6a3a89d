"""`ksent corpus list|show|check`: the declared corpora, and files read against a declaration (registered in
pipeline.apps.cli)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline import layout
from pipeline.apps.options import data_dir_option
from pipeline.errors import PipelineError


@click.group()
def corpus():
    """Declared corpora: list them, show what a declaration resolves to, check a file against it.

    A corpus is a TOML declaration NAME.toml, found in ksent's built-ins, in ./corpora/ and in the
    files or folders of $KSENT_CORPORA (docs/corpora.md documents every key).
    """


@corpus.command(name="list")
def corpus_list():
    """Every declared corpus, and where it is declared."""
    from pipeline.corpora import CORPORA
    from pipeline.predict.lines import escape

    for name, spec in CORPORA.items():                   # a description is shown, never run (escape codes)
        click.echo(f"{name:<24} {escape(spec.description) or '(no description)'}\n{'':<24} {escape(spec.origin)}")


@corpus.command(name="show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def corpus_show(name, as_json):
    """What declaration NAME resolves to: files, sources, format, columns, label rule, split."""
    from pipeline.corpora import get_corpus
    from pipeline.corpora.check import describe
    from pipeline.predict.lines import escape

    described = describe(get_corpus(name))
    if as_json:
        click.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    for key, value in described.items():               # shown, never run: a declaration may hold escape codes
        if isinstance(value, list):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + escape("; ".join(f"{k} {v}" for k, v in item.items())))
        elif isinstance(value, dict):
            click.echo(f"{key}: " + escape("; ".join(f"{k} {v}" for k, v in value.items())))
        else:
            click.echo(f"{key}: {escape(str(value))}")


@corpus.command(name="check")
@click.argument("name")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@data_dir_option(help="Where `download` put the corpus's files (checked when no FILES are given).")
def corpus_check(name, files, data_dir):
    """Read FILES (default: the corpus's downloaded files, else its declared local files) as declaration NAME
    says, without running the pipeline: rows, usable rows by label, problems by reason, what cleaning would
    drop, and whether the split can be made. Exits non-zero when `ksent run` would fail on them."""
    from pipeline.corpora import get_corpus
    from pipeline.corpora.check import check_file, split_check

    spec = get_corpus(name)
    if files:
        role = spec.files[0].source if len(spec.files) == 1 else "all"
        targets = [(Path(f), role) for f in files]
    else:                       # the downloaded copies, else the declared local files themselves
        raw = layout.raw_dir(data_dir, name)
        targets = [(raw / f.name if (raw / f.name).is_file() or f.local_path is None else f.local_path, f.source)
                   for f in spec.files]
        missing = [str(p) for p, _ in targets if not p.exists()]     # check_file names one that is not a file
        if missing:
            raise PipelineError(f"{missing[0]} is not there: give the files to check, or run "
                                f"`ksent download --corpus {name}` first")
        for f, (path, _) in zip(spec.files, targets, strict=True):      # what download would refuse
            if f.size is not None and path == f.local_path and path.is_file() and path.stat().st_size != f.size:
                raise PipelineError(f"{path} is {path.stat().st_size:,} bytes, but its declaration says size = "
                                    f"{f.size:,} ({spec.origin}): `ksent download` would refuse it - correct the "
                                    f"size, or the file")
    reports = []
    for path, role in targets:
        report = check_file(spec, path, role)
        reports.append(report)
        problems = ", ".join(f"{n:,} {reason}" for reason, n in report["problems"].items()) or "none"
        sources = ", ".join(f"{s} {n:,}" for s, n in report["by source"].items())
        click.echo(f"{path}: {report['rows']:,} rows -> {report['usable']:,} usable ({report['positive']:,} "
                   f"positive, {report['negative']:,} negative; {sources}); not usable: {problems}")
        if report["unmapped label values"]:
            click.echo("  label values no rule maps: " + ", ".join(
                f"{value!r} ({n:,})" for value, n in report["unmapped label values"].items()))
        for line in _cleaning_lines(report["cleaning"]) if report["usable"] else []:
            click.echo(f"  {line}")
    problem = split_check(spec, reports)
    if problem:
        raise PipelineError(f"{spec.origin}: {problem}")
    click.echo(f"{name}: `ksent run --corpus {name}` can read these files "
               f"({sum(r['usable'] for r in reports):,} usable rows)")


def _cleaning_lines(cleaning: dict) -> list[str]:
    """What `corpus check` says of cleaning: the usable rows that would be empty, and what other profiles keep."""
    if not cleaning["empty"]:
        return [f"cleaning (profile {cleaning['profile']}): no usable row becomes empty"]
    share = cleaning["empty_positive"] / cleaning["empty"]
    lines = [f"cleaning (profile {cleaning['profile']}): {cleaning['empty']:,} usable rows would be empty and "
             f"dropped ({share:.0%} positive)"
             + (f", e.g. {', '.join(repr(t[:40]) for t in cleaning['examples'])}" if cleaning["examples"] else "")]
    for profile, kept in cleaning["kept by"].items():
        if kept:
            lines.append(f"  profile {profile} would keep {kept:,} of them: [clean] profile = \"{profile}\" in "
                         f"the declaration")
    return lines

